# -*- test-case-name: piko.test.http -*-
"""
HTTP/1.1 for Piko: head models, Go-exact rewriting and error responses, a streaming server
protocol, and a streaming one-request proxy, all over any Twisted transport.

Modules, each with one job:

* :mod:`piko.http.head` - ``RequestHead``/``ResponseHead``, header lookup, endpoint id;
* :mod:`piko.http.rewrite` - Go ReverseProxy/``http.Server`` head rewriting;
* :mod:`piko.http.errors` - Piko's canned error responses;
* :mod:`piko.http.parser` - sans-IO incremental readers on httptools (llhttp);
* :mod:`piko.http.server` - ``HTTPServerProtocol`` and the handler interfaces;
* :mod:`piko.http.proxy` - ``ProxyExchange`` and upstream connectors.
"""
