"""Tests for :mod:`piko.http.head`."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from piko.http.head import (
    PACK_ABOVE,
    PackedHeaders,
    RequestHead,
    canonical_key,
    canonical_keys,
    endpoint_id_from_request,
    http_date,
    status_text,
)


class EndpointIDTests(SynchronousTestCase):
    """Go's TestEndpointIDFromRequest cases and a few more."""

    def test_host_first_label(self):
        """A Host with a dot names its first label, port ignored."""
        self.assertEqual(
            endpoint_id_from_request([(b"Host", b"my-endpoint.piko.com:9000")]), "my-endpoint"
        )

    def test_header_beats_host(self):
        """A non-empty x-piko-endpoint (any case) wins over Host."""
        headers = [(b"Host", b"foo.piko.com"), (b"X-PIKO-ENDPOINT", b"my-endpoint")]
        self.assertEqual(endpoint_id_from_request(headers), "my-endpoint")

    def test_empty_header_falls_back(self):
        """An empty x-piko-endpoint falls back to Host."""
        headers = [(b"x-piko-endpoint", b""), (b"Host", b"foo.piko.com")]
        self.assertEqual(endpoint_id_from_request(headers), "foo")

    def test_ip_host(self):
        """An IP host (v4 or v6, with or without port) names no endpoint."""
        for host in (b"10.26.104.56:8000", b"127.0.0.1", b"[::1]:8000", b"::1"):
            self.assertIsNone(endpoint_id_from_request([(b"Host", host)]), host)

    def test_no_dot(self):
        """A host without a dot (localhost) names no endpoint."""
        self.assertIsNone(endpoint_id_from_request([(b"Host", b"localhost:9000")]))

    def test_empty(self):
        """No Host and no header names no endpoint."""
        self.assertIsNone(endpoint_id_from_request([]))


class HelperTests(SynchronousTestCase):
    """Header and status helpers match Go."""

    def test_canonical_key(self):
        """Keys are canonicalised as textproto does; invalid names are left alone."""
        self.assertEqual(canonical_key(b"x-piko-endpoint"), b"X-Piko-Endpoint")
        self.assertEqual(canonical_key(b"SEC-WEBSOCKET-KEY"), b"Sec-Websocket-Key")
        self.assertEqual(canonical_key(b"bad header"), b"bad header")

    def test_get_case_insensitive(self):
        """RequestHead.get finds a header whatever its case."""
        head = RequestHead(b"GET", b"/", b"1.1", [(b"X-A", b"1")])
        self.assertEqual(head.get(b"x-a"), b"1")
        self.assertIsNone(head.get(b"x-b"))

    def test_status_text_and_date(self):
        """Status texts follow Go and dates use Go's http.TimeFormat."""
        self.assertEqual(status_text(502), b"Bad Gateway")
        self.assertEqual(status_text(599), b"status code 599")
        self.assertEqual(http_date(1795700650), b"Thu, 26 Nov 2026 13:44:10 GMT")

    def test_cached_helpers_answer_again(self):
        """Repeated calls (served from the caches) give the same answers as the first."""
        for _ in range(2):
            self.assertEqual(canonical_key(b"x-piko-endpoint"), b"X-Piko-Endpoint")
            self.assertEqual(canonical_key(b"bad header"), b"bad header")
            self.assertEqual(status_text(418), b"I'm a teapot")
        self.assertEqual(http_date(1795700650.1), b"Thu, 26 Nov 2026 13:44:10 GMT")
        self.assertEqual(http_date(1795700650.9), b"Thu, 26 Nov 2026 13:44:10 GMT")
        self.assertEqual(http_date(1795700651.0), b"Thu, 26 Nov 2026 13:44:11 GMT")
        self.assertEqual(http_date(-0.5), b"Wed, 31 Dec 1969 23:59:59 GMT")


_NAME_BYTES = st.sampled_from(list(b"aZz-09_.~!x\n :\t\xe9"))
_NAMES = st.lists(
    st.binary(max_size=0) | st.lists(_NAME_BYTES, max_size=10).map(bytes), max_size=60
)


class BulkHeaderTests(SynchronousTestCase):
    """The bulk helpers of the head rewrite give exactly what the per-header ones give."""

    @given(_NAMES)
    @settings(max_examples=100, deadline=None)
    def test_canonical_keys_as_canonical_key(self, names: list[bytes]) -> None:
        """canonical_keys is canonical_key of each name, whatever the names."""
        self.assertEqual(canonical_keys(names), [canonical_key(n) for n in names])

    def test_canonical_keys_go_cases(self) -> None:
        """Letters after digits stay lower, as Go's textproto leaves them."""
        names = [b"x-h1a", b"X-B3-TRACEID", b"a_b.c", b"-x", b"x--y", b"content-type"] * 2
        self.assertEqual(
            canonical_keys(names),
            [b"X-H1a", b"X-B3-Traceid", b"A_b.c", b"-X", b"X--Y", b"Content-Type"] * 2,
        )

    @given(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(list(b"aB-1")), min_size=1, max_size=6).map(bytes),
                st.lists(st.sampled_from(list(b"v :\t,")), max_size=6).map(bytes),
            ),
            min_size=PACK_ABOVE + 1,
            max_size=80,
        )
    )
    @settings(max_examples=100, deadline=None)
    def test_columns_as_iteration(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """PackedHeaders.columns gives the names and values iteration gives, blanks trimmed."""
        wire = b"".join(b"%s:%s\r\n" % p for p in pairs)
        raw = b"GET / HTTP/1.1\r\n" + wire + b"\r\n"
        packed = PackedHeaders(raw, raw.index(b"\r\n") + 2, len(raw) - 4)
        names, values = packed.columns()
        self.assertEqual(list(zip(names, values, strict=True)), list(packed))
