"""
End to end over loopback: JWT auth on the upstream and proxy ports, with
the SDK's ``token=`` as the agent sends it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web import server

from piko.config import AuthConfig
from piko.test.auth.keys import HMAC_SECRET, sign
from piko.test.e2e.harness import E2ETestCase
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
