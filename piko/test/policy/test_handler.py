# -*- test-case-name: piko.test.policy.test_handler -*-
"""Tests for :class:`piko.policy.handler.PolicyHandler`, over StringTransport and a Clock."""

import base64
import json

import bcrypt
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.config import ServerConfig, apply_yaml
from piko.http.server import HTTPServerProtocol, IRequestHandler
from piko.policy.config import compile_policies
from piko.policy.handler import PolicyHandler
from piko.policy.metrics import PolicyMetrics
from piko.test.http.test_server import Handler

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def policies(yaml_text, clock):
    return compile_policies(apply_yaml(ServerConfig(), yaml_text, "t").policies, clock.seconds)


class Setup:
    def __init__(self, yaml_text, auto=True, read_body=False, peer="192.0.2.1"):
        self.clock = Clock()
        self.inner = Handler(auto=auto, read_body=read_body)
        self.registry = CollectorRegistry()
        self.handler = PolicyHandler(
            self.inner,
            self.clock,
            policies(yaml_text, self.clock),
            metrics=PolicyMetrics(self.registry),
        )
        self.peer = peer

    def connect(self, **kw):
        proto = HTTPServerProtocol(self.handler, self.clock, date=lambda: b"D", **kw)
        transport = StringTransport(peerAddress=IPv4Address("TCP", self.peer, 5555))
        proto.makeConnection(transport)
        return proto, transport

    def get(self, extra=b"", endpoint=b"api"):
        proto, transport = self.connect()
        proto.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: " + endpoint + b"\r\n" + extra + b"\r\n"
        )
        return transport.value()

    def refused(self, policy, action):
        value = self.registry.get_sample_value(
            "piko_policy_refused_total", {"policy": policy, "action": action}
        )
        return value or 0


def body_of(response):
    return json.loads(response.partition(b"\r\n\r\n")[2])


RATE = """
policies:
  - name: api-limit
    endpoints: ["api", "api-*"]
    rate_limit: {requests: 2, period: 1s}
"""


class RateLimitTests(SynchronousTestCase):
    def test_interface(self):
        """The handler is an IRequestHandler."""
        verifyObject(IRequestHandler, Setup(RATE).handler)

    def test_limit_per_ip(self):
        """Over the rate a client gets 429, Retry-After and a JSON error; the clock refills."""
        s = Setup(RATE)
        self.assertTrue(s.get().startswith(b"HTTP/1.1 200"))
        self.assertTrue(s.get().startswith(b"HTTP/1.1 200"))
        refused = s.get()
        self.assertTrue(refused.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), refused)
        self.assertIn(b"\r\nRetry-After: 1\r\n", refused)
        self.assertIn(b"\r\nContent-Type: application/json\r\n", refused)
        self.assertEqual(body_of(refused), {"error": "rate limit exceeded"})
        self.assertEqual(len(s.inner.exchanges), 2, "the refused request went nowhere")
        self.assertEqual(s.refused("api-limit", "rate_limit"), 1)
        s.clock.advance(0.5)
        self.assertTrue(s.get().startswith(b"HTTP/1.1 200"))

    def test_other_endpoints_untouched(self):
        """Endpoints no policy matches pass unlimited."""
        s = Setup(RATE)
        for _ in range(10):
            self.assertTrue(s.get(endpoint=b"web").startswith(b"HTTP/1.1 200"))

    def test_tcp_route_counts_opens(self):
        """On /_piko/v1/tcp/<id> the rate limit counts connection opens."""
        s = Setup(RATE)
        for expect in (b"200", b"200", b"429"):
            proto, transport = s.connect()
            proto.dataReceived(b"GET /_piko/v1/tcp/api-db HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 " + expect))

    def test_header_key(self):
        """A header-keyed limit gives each key its own bucket."""
        s = Setup(RATE.replace("period: 1s}", "period: 1s, key: 'header:X-Api-Key'}"))
        for _ in range(2):
            self.assertTrue(s.get(b"X-Api-Key: a\r\n").startswith(b"HTTP/1.1 200"))
        self.assertTrue(s.get(b"X-Api-Key: a\r\n").startswith(b"HTTP/1.1 429"))
        self.assertTrue(s.get(b"X-Api-Key: b\r\n").startswith(b"HTTP/1.1 200"))


IP = """
policies:
  - name: hook
    endpoints: [api]
    trusted_proxies: [10.0.0.0/8]
    ip: {allow: [192.0.2.0/24, "2001:db8::/32"], deny: [192.0.2.66/32]}
"""


class IPTests(SynchronousTestCase):
    def test_allow_deny(self):
        """Allowed peers pass; denied and unlisted ones get 403."""
        self.assertTrue(Setup(IP).get().startswith(b"HTTP/1.1 200"))
        s = Setup(IP, peer="198.51.100.1")
        refused = s.get()
        self.assertTrue(refused.startswith(b"HTTP/1.1 403"), refused)
        self.assertEqual(body_of(refused), {"error": "forbidden by policy"})
        self.assertEqual(s.refused("hook", "ip"), 1)
        self.assertTrue(Setup(IP, peer="192.0.2.66").get().startswith(b"HTTP/1.1 403"))

    def test_forwarded_for_from_trusted_proxy(self):
        """Behind a trusted proxy X-Forwarded-For names the client."""
        s = Setup(IP, peer="10.1.1.1")
        self.assertTrue(s.get(b"X-Forwarded-For: 192.0.2.5\r\n").startswith(b"HTTP/1.1 200"))
        self.assertTrue(s.get(b"X-Forwarded-For: 6.6.6.6\r\n").startswith(b"HTTP/1.1 403"))

    def test_spoofed_forwarded_for(self):
        """An untrusted peer cannot pass by claiming an allowed address."""
        s = Setup(IP, peer="198.51.100.1")
        self.assertTrue(s.get(b"X-Forwarded-For: 192.0.2.5\r\n").startswith(b"HTTP/1.1 403"))

    def test_malformed_forwarded_for(self):
        """A malformed X-Forwarded-For from a trusted proxy is a 400, and the server goes on."""
        s = Setup(IP, peer="10.1.1.1")
        refused = s.get(b"X-Forwarded-For: 192.0.2.5, <script>\r\n")
        self.assertTrue(refused.startswith(b"HTTP/1.1 400"), refused)
        self.assertEqual(body_of(refused), {"error": "malformed x-forwarded-for"})
        self.assertTrue(s.get(b"X-Forwarded-For: 192.0.2.5\r\n").startswith(b"HTTP/1.1 200"))


AUTH = f"""
policies:
  - name: admin-ui
    endpoints: [api]
    basic_auth:
      realm: Admin
      users: [{{user: alice, hash: "{HASH}"}}]
"""


def basic(user, password):
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


class BasicAuthTests(SynchronousTestCase):
    def test_challenge(self):
        """No or wrong credentials get 401 and WWW-Authenticate."""
        s = Setup(AUTH)
        for extra in (b"", basic("alice", "nope")):
            refused = s.get(extra)
            self.assertTrue(refused.startswith(b"HTTP/1.1 401"), refused)
            self.assertIn(
                b'\r\nWww-Authenticate: Basic realm="Admin", charset="UTF-8"\r\n', refused
            )
        self.assertEqual(s.inner.exchanges, [])
        self.assertEqual(s.refused("admin-ui", "basic_auth"), 2)

    def test_credentials_stripped(self):
        """A passed request goes on without its Authorization header."""
        s = Setup(AUTH)
        self.assertTrue(s.get(basic("alice", "pw")).startswith(b"HTTP/1.1 200"))
        (exchange,) = s.inner.exchanges
        self.assertIsNone(exchange.head.get(b"authorization"))
        self.assertEqual(exchange.head.get(b"x-piko-endpoint"), b"api")

    def test_huge_authorization(self):
        """A 1 MiB Authorization header is a 401, cheaply, and the server goes on."""
        s = Setup(AUTH)
        proto, transport = s.connect(max_header_bytes=4 << 20)  # past Go's default 1 MiB
        huge = b"Authorization: Basic " + b"A" * (1 << 20) + b"\r\n"
        proto.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: api\r\n" + huge + b"\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401"), transport.value()[:80])
        self.assertTrue(s.get(basic("alice", "pw")).startswith(b"HTTP/1.1 200"))


HEADERS = """
policies:
  - name: h
    endpoints: [api]
    headers:
      request: {add: ["X-Added: 1"], set: ["X-Env: prod"], remove: [Cookie]}
      response: {set: ["Cache-Control: no-store"], remove: [Server]}
"""


class HeaderTests(SynchronousTestCase):
    def test_rules(self):
        """Request and response headers are edited as configured."""
        s = Setup(HEADERS, auto=False)
        proto, transport = s.connect()
        proto.dataReceived(
            b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: api\r\n"
            b"Cookie: a=b\r\nX-Env: dev\r\n\r\n"
        )
        (exchange,) = s.inner.exchanges
        self.assertIsNone(exchange.head.get(b"cookie"))
        self.assertEqual(exchange.head.get(b"x-env"), b"prod")
        self.assertEqual(exchange.head.get(b"x-added"), b"1")
        exchange.start_response(200, ((b"Server", b"x"), (b"Content-Length", b"0")))
        exchange.finish()
        response = transport.value()
        self.assertIn(b"\r\nCache-Control: no-store\r\n", response)
        self.assertNotIn(b"Server:", response)


LIMITS = """
policies:
  - name: lim
    endpoints: [api]
    limits: {max_body_bytes: 10, max_concurrent: 2}
"""


class LimitTests(SynchronousTestCase):
    def post(self, s, body_head, body=b""):
        proto, transport = s.connect()
        proto.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: api\r\n" + body_head + b"\r\n" + body
        )
        return proto, transport

    def test_declared_length(self):
        """A Content-Length over the limit is a 413 before routing."""
        s = Setup(LIMITS)
        _, transport = self.post(s, b"Content-Length: 11\r\n", b"x" * 11)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"), transport.value())
        self.assertEqual(s.inner.exchanges, [])
        self.assertEqual(s.refused("lim", "max_body_bytes"), 1)

    def test_chunked_cut_as_it_streams(self):
        """A chunked body is cut with 413 once it passes the limit; the relay is told."""
        s = Setup(LIMITS, auto=False, read_body=True)
        proto, transport = self.post(s, b"Transfer-Encoding: chunked\r\n", b"6\r\nabcdef\r\n")
        (receiver,) = s.inner.receivers
        self.assertEqual(receiver.data, [b"abcdef"])
        proto.dataReceived(b"6\r\nghijkl\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"), transport.value())
        self.assertIsNotNone(receiver.lost)
        self.assertEqual(receiver.data, [b"abcdef"])

    def test_concurrency(self):
        """The third concurrent request gets 503; a finished one frees its slot."""
        s = Setup(LIMITS, auto=False)
        s.get()
        s.get()
        refused = s.get()
        self.assertTrue(refused.startswith(b"HTTP/1.1 503"), refused)
        self.assertEqual(body_of(refused), {"error": "too many concurrent requests"})
        first = s.inner.exchanges[0]
        first.start_response(200, ((b"Content-Length", b"0"),))
        first.finish()
        s.get()
        self.assertEqual(len(s.inner.exchanges), 3)
        self.assertEqual(s.handler.in_flight.counts, {"api": 3 - 1})

    def test_slot_freed_when_client_goes(self):
        """A client that goes away mid-body frees its slot."""
        s = Setup(LIMITS, auto=False, read_body=True)
        proto, _ = self.post(s, b"Content-Length: 5\r\n", b"ab")
        self.assertEqual(s.handler.in_flight.counts, {"api": 1})
        proto.connectionLost()
        self.assertEqual(s.handler.in_flight.counts, {})
