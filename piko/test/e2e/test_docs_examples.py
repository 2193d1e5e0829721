"""The examples in ``docs/examples`` run as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks

from piko.test.e2e.harness import E2ETestCase, reactor

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ExampleTests(E2ETestCase):
    @inlineCallbacks
    def test_serve_site(self) -> Any:
        """serve_site.py serves a twisted.web Site on a Piko endpoint through the piko: string."""
        yield self.start_server()
        example = load("serve_site")
        port = yield example.serve(
            reactor, f"http://127.0.0.1:{self.port_of('upstream')}", "my-site"
        )
        self.addCleanup(port.shutdown)
        response = yield self.request(b"GET / HTTP/1.1\r\nHost: my-site.example.com\r\n\r\n")
        self.assertEqual(response.body, b"Hello from a twisted.web Site behind Piko\n")
