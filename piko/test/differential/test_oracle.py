# -*- test-case-name: piko.test.differential.test_oracle -*-
"""
Tests for the differential oracle's rules on their own: no processes, just
recorded observations of one exchange, so a rule that hides a real
difference (or reports Go's own behaviour as ours) fails here first.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from piko.test.differential import oracle
from piko.test.differential.spec import Exchange, body_bytes
from piko.test.differential.topology import TOPOLOGIES
from piko.test.differential.wire import digest

_EMPTY = "e3b0c44298fc1c14"


def _exchange(**changes: Any) -> Exchange:
    fields: dict[str, Any] = {
        "key": "1-0",
        "kind": "http",
        "method": "PATCH",
        "status": 404,
        "response_framing": "length",
        "response_size": 0,
        "response_headers": (("X-Resp", "v"), ("Content-Type", "application/x-y")),
    }
    fields.update(changes)
    return Exchange(**fields)


def _observed(content_type: str, body_len: int = 0, status: int = 404) -> dict[str, Any]:
    service = [
        {
            "method": "PATCH",
            "target": "/",
            "version": "HTTP/1.1",
            "headers": [("Host", "diff.test")],
            "framing": "none",
            "body_len": 0,
            "body": _EMPTY,
            "trailers": [],
            "body_complete": True,
        }
    ]
    client = {
        "end": "complete",
        "status": status,
        "headers": [
            ("Content-Length", str(body_len)),
            ("Content-Type", content_type),
            ("X-Resp", "v"),
        ],
        "interim": [],
        "framing": "length",
        "body_len": body_len,
        "body": _EMPTY if body_len == 0 else "other",
        "trailers": [],
    }
    return {"client": client, "service": service, "topology": TOPOLOGIES["go"]}


class GinRetypedEmpty404Tests(SynchronousTestCase):
    """
    Go's gin answers ``text/plain`` for the service's ``Content-Type`` on a
    404 with ``Content-Length`` and no body (seed 1568958575 exchange 3).
    """

    def test_all_ours_keeps_the_service_type(self) -> None:
        """
        An all-ours path passing the service's type is the better outcome
        and no mismatch, in one node or a cluster.
        """
        go = _observed("text/plain")
        ours = _observed("application/x-y")
        for name in ("ours", "ours-cluster"):
            self.assertEqual(oracle.compare(_exchange(), TOPOLOGIES[name], ours, go), [])

    def test_all_ours_must_keep_the_service_type(self) -> None:
        """An all-ours path that retypes as Go does is a mismatch."""
        go = _observed("text/plain")
        problems = oracle.compare(_exchange(), TOPOLOGIES["ours"], go, go)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("content-type", problems[0])

    def test_go_in_path_retypes(self) -> None:
        """With a Go server or agent in the path, Go's ``text/plain`` is expected."""
        go = _observed("text/plain")
        ours = _observed("application/x-y")
        for name in ("go-server+ours-agent", "ours-server+go-agent", "mixed-cluster-rev"):
            self.assertEqual(oracle.compare(_exchange(), TOPOLOGIES[name], go, go), [])
            self.assertNotEqual(oracle.compare(_exchange(), TOPOLOGIES[name], ours, go), [])

    def test_head(self) -> None:
        """A ``HEAD`` 404 carries no body whatever its ``Content-Length``: retyped too."""
        exchange = _exchange(method="HEAD", response_size=7)
        go = _observed("text/plain")
        ours = _observed("application/x-y")
        self.assertEqual(oracle.compare(exchange, TOPOLOGIES["ours"], ours, go), [])

    def test_only_empty_length_framed_404(self) -> None:
        """
        A 404 with a body, another status, or a chunked head is not retyped
        by Go, so a different type there is still a mismatch.
        """
        for exchange, status, body_len in (
            (_exchange(response_size=5), 404, 5),
            (_exchange(status=500), 500, 0),
            (_exchange(response_framing="chunked"), 404, 0),
        ):
            go = _observed("text/plain", body_len, status)
            ours = _observed("application/x-y", body_len, status)
            self.assertNotEqual(
                oracle.compare(exchange, TOPOLOGIES["ours"], ours, go), [], exchange
            )


class EmptyUnsizedBodyTests(SynchronousTestCase):
    """
    An empty response the service sent chunked or close-delimited reaches a
    client of Go as ``Content-Length: 0`` or as an empty chunked body, run to
    run (seed 1139911386 exchange 146): the same message, no mismatch.
    """

    def _client(self, framing: str, body_len: int = 0) -> dict[str, Any]:
        observed = _observed("application/x-y", body_len, status=302)
        client = observed["client"]
        client["framing"] = framing
        if framing == "chunked":
            client["headers"] = [f for f in client["headers"] if f[0] != "Content-Length"]
        return observed

    def test_length_zero_or_empty_chunked(self) -> None:
        """Either form of the empty body matches the other."""
        for response_framing in ("close", "chunked"):
            exchange = _exchange(status=302, response_framing=response_framing)
            for name in ("ours-cluster", "mixed-cluster"):
                problems = oracle.compare(
                    exchange, TOPOLOGIES[name], self._client("chunked"), self._client("length")
                )
                self.assertEqual(problems, [])

    def test_not_a_sized_or_nonempty_body(self) -> None:
        """
        A service's ``Content-Length: 0`` must stay that, and a body the
        service sent must arrive, whatever its framing.
        """
        sized = _exchange(status=302)
        self.assertNotEqual(
            oracle.compare(
                sized, TOPOLOGIES["ours"], self._client("chunked"), self._client("length")
            ),
            [],
        )
        unsized = _exchange(status=302, response_framing="close", response_size=5)
        self.assertNotEqual(
            oracle.compare(
                unsized, TOPOLOGIES["ours"], self._client("chunked"), self._client("length", 5)
            ),
            [],
        )


class GoCompletesCutEarlyAnswerTests(SynchronousTestCase):
    """
    With Go in the path, an early answer whose upload Go cut may reach the
    client short yet ended by ``0\\r\\n\\r\\n`` (seed 731690393 exchange 178):
    Go's recovery middleware finishes the aborted handler's answer.
    """

    size = 586307

    def _exchange(self) -> Exchange:
        return _exchange(
            method="POST",
            status=200,
            framing="chunked",
            body_size=507108,
            service="early",
            response_framing="chunked",
            response_size=self.size,
        )

    def _observed(self, body_len: int, upload_complete: bool) -> dict[str, Any]:
        exchange = self._exchange()
        sent = body_bytes(exchange.key, exchange.response_size, "r")
        client = {
            "end": "complete",
            "status": 200,
            "headers": [("Content-Type", "application/x-y"), ("X-Resp", "v")],
            "interim": [],
            "framing": "chunked",
            "body_len": body_len,
            "body": digest(sent[:body_len]),
            "trailers": [],
        }
        service = [
            {
                "method": "POST",
                "target": "/",
                "version": "HTTP/1.1",
                "headers": [("Host", "diff.test")],
                "early": True,
                "body_len": 281930 if not upload_complete else 507108,
                "body_complete": upload_complete,
            }
        ]
        return {"client": client, "service": service, "topology": TOPOLOGIES["go"]}

    def test_go_in_path_and_upload_cut(self) -> None:
        """A Go server or agent in the path, the upload cut at the service: allowed."""
        go = self._observed(self.size, upload_complete=True)
        cut = self._observed(193484, upload_complete=False)
        for name in ("go-server+ours-agent", "ours-server+go-agent", "mixed-cluster"):
            self.assertEqual(oracle.compare(self._exchange(), TOPOLOGIES[name], cut, go), [])

    def test_all_ours_path(self) -> None:
        """An all-ours path has no such excuse: cut but complete is a mismatch."""
        go = self._observed(self.size, upload_complete=True)
        cut = self._observed(193484, upload_complete=False)
        for name in ("ours", "ours-cluster"):
            problems = oracle.compare(self._exchange(), TOPOLOGIES[name], cut, go)
            self.assertEqual(len(problems), 1, problems)
            self.assertIn("cut but marked complete", problems[0])

    def test_upload_whole(self) -> None:
        """
        With the upload whole at the service, nothing started Go's race: a cut
        answer marked complete is a mismatch even with Go in the path.
        """
        go = self._observed(self.size, upload_complete=True)
        cut = self._observed(193484, upload_complete=True)
        problems = oracle.compare(self._exchange(), TOPOLOGIES["go-server+ours-agent"], cut, go)
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("cut but marked complete", problems[0])
