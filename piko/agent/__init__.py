"""
The Piko agent: registers listeners on a Piko server and forwards what they receive to local
services.

- :mod:`piko.agent.service` - :func:`~piko.agent.service.make_agent_service`, the service the
  CLI and ``twistd piko-agent`` run;
- :mod:`piko.agent.http_listener` - HTTP listeners (reverse proxy per yamux stream);
- :mod:`piko.agent.tcp_listener` - TCP listeners (splice per yamux stream);
- :mod:`piko.http.pool` (shared with the server) - keep-alive connections to the local HTTP service;
- :mod:`piko.tls` - client TLS from configuration.
"""
