"""
End to end over loopback: JWT auth on the upstream and proxy ports, with
the SDK's ``token=`` as the agent sends it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jwt.algorithms import RSAAlgorithm
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web import server

from piko.config import AuthConfig
from piko.test.auth.keys import HMAC_SECRET, WEAK_RSA_KEY, public_pem, sign
from piko.test.e2e.harness import E2ETestCase, reactor
from piko.test.e2e.test_getting_started import ROOT
from piko.test.e2e.test_http import Echo
from piko.ws.client import WebSocketDialError


class AuthTests(E2ETestCase):
    @inlineCallbacks
    def test_hmac_token(self) -> Any:
        """A valid token listens and is proxied to; a bad token gets ``401: invalid token``;
        a request without a token gets 401 ``missing authorization``."""
        auth = AuthConfig(hmac_secret_key=HMAC_SECRET)
        yield self.start_server(auth=auth, upstream={"auth": auth})
        token = sign({"piko": {"endpoints": ["my-ep"]}})
        yield self.listen("my-ep", server.Site(Echo()), token=token)

        error = yield self.assertFailure(
            self.upstream(token=sign({}, key="wrong" * 13)).listen("my-ep", server.Site(Echo())),
            WebSocketDialError,
        )
        self.assertEqual(str(error), "401: invalid token")
        self.assertFalse(error.retryable)

        response = yield self.request(
            b"GET / HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: my-ep\r\n\r\n"
        )
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header(b"content-type"), b"application/json; charset=utf-8")
        self.assertEqual(response.body, b'{"error":"missing authorization"}')

        response = yield self.request(
            b"GET /hi HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: my-ep\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n"
        )
        self.assertEqual(response.status, 200)

    def test_unusable_auth_refuses_to_start(self) -> None:
        """A bad PEM on any port stops the server being built, with a message naming the key."""
        from piko.auth import AuthConfigError
        from piko.server.service import make_server_service
        from piko.test.e2e.harness import reactor, server_config

        config = server_config(upstream={"auth": AuthConfig(rsa_public_key="garbage")})
        error = self.assertRaises(AuthConfigError, make_server_service, config, reactor)
        self.assertIn("config: upstream: auth: parse rsa public key", str(error))


class _Collect(ProcessProtocol):
    """Gathers a child's stdout and stderr apart, and its exit code."""

    def __init__(self) -> None:
        self.out = {1: b"", 2: b""}
        self.ended: Deferred[int | None] = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.out[fd] = self.out.get(fd, b"") + data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


class WeakKeyStartTests(TestCase):
    """``piko server`` with a weak RSA key fails closed, as a user sees it."""

    timeout = 60

    @inlineCallbacks
    def run_server(self, *flags: str, twistd: bool = False) -> Any:
        """
        Run ``piko server`` (or ``twistd -n piko-server``) with ``flags``; kill it if
        it is still up after 20 s.
        """
        process = _Collect()
        binds = [
            f"--{name}.bind-addr=127.0.0.1:0"
            for name in ("proxy", "upstream", "admin", "cluster.gossip")
        ]
        if twistd:
            run = "from twisted.scripts.twistd import run; run()"
            command = ["-c", run, "-n", "--pidfile=", "piko-server"]
        else:
            command = ["-m", "piko", "server"]
        argv = [sys.executable, *command, *binds, *flags]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        transport = reactor.spawnProcess(process, sys.executable, argv, env=env)
        killer = reactor.callLater(20, transport.signalProcess, "KILL")
        code = yield process.ended
        if killer.active():
            killer.cancel()
        else:
            self.fail(f"piko server kept running with {flags}: {process.out!r}")
        return code, process.out[1], process.out[2]

    @inlineCallbacks
    def test_static_weak_key(self) -> Any:
        """
        A 512-bit ``--proxy.auth.rsa-public-key``: one line on stderr, exit 1, from
        ``piko server`` and from ``twistd piko-server`` alike.
        """
        for twistd in (False, True):
            code, out, err = yield self.run_server(
                "--proxy.auth.rsa-public-key", public_pem(WEAK_RSA_KEY), twistd=twistd
            )
            self.assertEqual(code, 1)
            self.assertEqual(
                err.decode(),
                ("twistd piko-server: " if twistd else "")
                + "config: proxy: auth: rsa public key: 512-bit RSA key refused: "
                "at least 2048 bits are required\n",
            )
            self.assertNotIn(b"Traceback", out)

    @inlineCallbacks
    def test_jwks_file_of_weak_keys(self) -> Any:
        """A ``file://`` JWKS holding only a weak key refuses to start, saying why."""
        path = os.path.abspath(self.mktemp())
        entry = {**RSAAlgorithm.to_jwk(WEAK_RSA_KEY.public_key(), as_dict=True), "kid": "weak"}
        with open(path, "w") as f:
            json.dump({"keys": [entry]}, f)
        code, out, err = yield self.run_server(f"--upstream.auth.jwks.endpoint=file://{path}")
        self.assertEqual(code, 1)
        self.assertIn(
            f"config: upstream: auth: jwks: {path}: no usable signing keys; key weak: "
            "512-bit RSA key refused: at least 2048 bits are required\n",
            err.decode(),
        )
        self.assertNotIn(b"Traceback", out + err)
