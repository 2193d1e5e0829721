"""End-to-end tests over real sockets on 127.0.0.1: a server node, SDK upstreams, clients."""
