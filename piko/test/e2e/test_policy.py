# -*- test-case-name: piko.test.e2e.test_policy -*-
"""
Traffic policies on a real server node with a real upstream, from the files in
``docs/examples`` as they are: refused requests never reach the local service, and a
reload under load loses no request.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.web import resource, server

from piko.config import LoadConfig, apply_yaml, build_server_config, read_text
from piko.server.service import make_server_service
from piko.test.e2e.harness import E2ETestCase, reactor, server_config

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


class Counting(resource.Resource):
    """The local service: records every request it gets."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def render(self, request: Any) -> bytes:
        self.seen.append(request.getHeader("authorization"))
        return b"ok"


def get(endpoint: str, extra: bytes = b"") -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: "
        + endpoint.encode()
        + b"\r\n"
        + extra
        + b"\r\n"
    )


class PolicyExampleTests(E2ETestCase):
    @inlineCallbacks
    def start_with(self, name: str, path: str | None = None) -> Any:
        text = read_text(str(EXAMPLES / name))
        config = apply_yaml(server_config(), text, name)
        service = yield self.start_service(config)
        self.server = service
        service.policy_reloader.source = LoadConfig(path=path or str(EXAMPLES / name))
        return service

    def test_examples_load(self) -> None:
        """Every policy example loads as ``piko server --config.path FILE`` loads it."""
        for path in sorted(EXAMPLES.glob("policy-*.yaml")):
            config = build_server_config({"config.path": str(path)})
            # Building the node compiles the policies and loads the tenants' keys.
            make_server_service(config, reactor)

    @inlineCallbacks
    def test_rate_limit_example(self) -> Any:
        """policy-rate-limit.yaml: a loop gets 5 answers, then 429s the service never sees."""
        yield self.start_with("policy-rate-limit.yaml")
        site = Counting()
        yield self.listen("api", server.Site(site))
        statuses = []
        for _ in range(8):
            response = yield self.request(get("api"))
            statuses.append(response.status)
        self.assertEqual(statuses[:5], [200] * 5)
        self.assertIn(429, statuses[5:])
        self.assertEqual(len(site.seen), statuses.count(200))
        metrics = self.server.metrics.render()[1]
        self.assertIn(
            b'piko_policy_refused_total{action="rate_limit",policy="api-per-ip"}', metrics
        )

    @inlineCallbacks
    def test_basic_auth_example(self) -> Any:
        """policy-basic-auth.yaml: 401 without the password; with it the UI gets no credentials."""
        yield self.start_with("policy-basic-auth.yaml")
        site = Counting()
        yield self.listen("admin-ui", server.Site(site))
        refused = yield self.request(get("admin-ui"))
        self.assertEqual(refused.status, 401)
        self.assertIn(b"Basic realm=", refused.header(b"www-authenticate"))
        self.assertEqual(site.seen, [])
        good = b"Authorization: Basic " + base64.b64encode(b"admin:change-me") + b"\r\n"
        response = yield self.request(get("admin-ui", good))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"cache-control"), b"no-store")
        self.assertEqual(site.seen, [None])

    @inlineCallbacks
    def test_reload_under_load(self) -> Any:
        """
        Reloads (good files, then a bad one) while requests are in flight lose none; the bad
        file is refused over the admin route with its error, and the old policy stays.
        """
        policy_file = Path(self.mktemp())
        policy_file.write_text(read_text(str(EXAMPLES / "policy-api-key.yaml")))
        yield self.start_with("policy-api-key.yaml", str(policy_file))
        site = Counting()
        yield self.listen("api-v1", server.Site(site))
        results: list[int] = []

        @inlineCallbacks
        def one(i: int) -> Any:
            response = yield self.request(get("api-v1", b"X-Api-Key: k%d\r\n" % (i % 7)))
            results.append(response.status)

        for _round in range(5):
            batch = [one(i) for i in range(20)]
            result = self.server.reload_policies()
            self.assertTrue(result.ok, result.message)
            yield DeferredList(batch, fireOnOneErrback=True, consumeErrors=True)
        self.assertEqual(results, [200] * 100)
        self.assertEqual(len(site.seen), 100)
        policy_file.write_text(
            "policies:\n  - name: broken\n    endpoints: [x]\n    ip: {allow: [nope]}\n"
        )
        admin = self.port_of("admin")
        response = yield self.request(
            b"POST /policy/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", admin
        )
        self.assertEqual(response.status, 400)
        self.assertIn(b"invalid CIDR 'nope'", response.body)
        self.assertEqual(
            [p.name for p in self.server.policy_handler.policies.policies], ["api-per-key"]
        )
        ok = yield self.request(get("api-v1"))
        self.assertEqual(ok.status, 200)

    @inlineCallbacks
    def test_tenant_owns_endpoints(self) -> Any:
        """policy-tenants.yaml: a tenant's upstream may not register another tenant's endpoint."""
        import jwt

        from piko.client import Upstream

        config = build_server_config({"config.path": str(EXAMPLES / "policy-tenants.yaml")})
        base = server_config()
        config = evolve(base, upstream=evolve(base.upstream, tenants=config.upstream.tenants))
        service = yield self.start_service(config)
        self.server = service
        key = "blue-secret-at-least-32-bytes-long!!"
        token = jwt.encode({"sub": "u"}, key, algorithm="HS256")
        url = f"http://127.0.0.1:{self.port_of('upstream')}"
        mine = Upstream(reactor, url, token=token, tenant_id="blue")
        port = yield mine.listen("blue-app", server.Site(Counting()))
        self.addCleanup(port.shutdown)
        theirs = Upstream(reactor, url, token=token, tenant_id="blue")
        failure = None
        try:
            other = yield theirs.listen("green-app", server.Site(Counting()))
            self.addCleanup(other.shutdown)
        except Exception as error:
            failure = error
        self.assertIsNotNone(failure)
        self.assertIn("endpoint not permitted", str(failure))
