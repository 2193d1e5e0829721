# -*- test-case-name: piko.test.policy.test_store -*-
"""Tests for the bucket store, the client address and basic auth (no sockets)."""

import base64
import ipaddress

import bcrypt
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from piko.policy.basicauth import MAX_AUTHORIZATION, BasicAuth, password_checker
from piko.policy.buckets import TokenBucketStore, retry_after
from piko.policy.ipfilter import MALFORMED, IPRules, client_address, parse_networks

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def basic(user, password):
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class BucketTests(SynchronousTestCase):
    def test_burst_then_refill(self):
        """A bucket gives ``burst`` tokens at once, then one per 1/rate seconds."""
        clock = Clock()
        store = TokenBucketStore(clock.seconds, rate=2.0, burst=3, max_keys=10)
        self.assertEqual([store.take("a") for _ in range(3)], [0.0, 0.0, 0.0])
        self.assertAlmostEqual(store.take("a"), 0.5)
        self.assertEqual(retry_after(0.5), 1)
        clock.advance(0.5)
        self.assertEqual(store.take("a"), 0.0)
        self.assertEqual(store.take("b"), 0.0, "keys have their own buckets")

    def test_hard_cap_with_many_keys(self):
        """A million distinct keys never hold more than ``max_keys`` buckets."""
        clock = Clock()
        store = TokenBucketStore(clock.seconds, rate=1.0, burst=5, max_keys=1000)
        for i in range(1_000_000):
            store.take(str(i))
        self.assertEqual(len(store), 1000)
        self.assertEqual(store.evicted, 1_000_000 - 1000)

    def test_idle_buckets_evicted(self):
        """Buckets idle long enough to be full again are dropped as new keys arrive."""
        clock = Clock()
        store = TokenBucketStore(clock.seconds, rate=1.0, burst=2, max_keys=1000)
        for i in range(100):
            store.take(f"old{i}")
        clock.advance(10)
        for i in range(100):
            store.take(f"new{i}")
        self.assertEqual(len(store), 100)
        self.assertEqual(store.evicted, 0)


class ClientAddressTests(SynchronousTestCase):
    trusted = parse_networks(["10.0.0.0/8", "fd00::/8"], "t")

    def test_untrusted_peer_ignores_header(self):
        """X-Forwarded-For from an untrusted peer is ignored."""
        got = client_address("203.0.113.9", [b"1.2.3.4"], self.trusted)
        self.assertEqual(got, ipaddress.ip_address("203.0.113.9"))

    def test_trusted_chain(self):
        """From a trusted proxy the rightmost untrusted hop is the client."""
        got = client_address("10.0.0.1", [b"6.6.6.6, 1.2.3.4", b"10.0.0.2"], self.trusted)
        self.assertEqual(got, ipaddress.ip_address("1.2.3.4"))

    def test_ipv6_and_mapped(self):
        """IPv6 hops and IPv4-mapped peers are understood."""
        got = client_address("fd00::1", [b"2001:db8::7"], self.trusted)
        self.assertEqual(got, ipaddress.ip_address("2001:db8::7"))
        got = client_address("::ffff:10.1.2.3", [b"[2001:db8::8]"], self.trusted)
        self.assertEqual(got, ipaddress.ip_address("2001:db8::8"))

    def test_malformed(self):
        """A garbage hop, an empty hop or a huge header make the client unknown."""
        for header in (b"not-an-ip", b"1.2.3.4,,", b"\xff\x00", b"10.0.0.3," * 100_000):
            self.assertEqual(client_address("10.0.0.1", [header], self.trusted), MALFORMED)

    def test_rules(self):
        """Deny wins over allow; an allow list admits only its networks."""
        rules = IPRules(
            parse_networks(["192.0.2.0/24", "2001:db8::/32"], "a"),
            parse_networks(["192.0.2.66"], "d"),
        )
        self.assertTrue(rules.permits(ipaddress.ip_address("192.0.2.1")))
        self.assertTrue(rules.permits(ipaddress.ip_address("2001:db8::1")))
        self.assertFalse(rules.permits(ipaddress.ip_address("192.0.2.66")))
        self.assertFalse(rules.permits(ipaddress.ip_address("198.51.100.1")))
        self.assertFalse(rules.permits(MALFORMED))

    def test_bad_cidr(self):
        """A bad CIDR is an error naming where it is."""
        with self.assertRaisesRegex(ValueError, "here: invalid CIDR 'nope'"):
            parse_networks(["nope"], "here")


class BasicAuthTests(SynchronousTestCase):
    def auth(self):
        return BasicAuth({"alice": password_checker(HASH)}, "admin")

    def test_check(self):
        """The right password passes; a wrong one, an unknown user or garbage do not."""
        auth = self.auth()
        self.assertEqual(auth.check(basic("alice", "s3cret")), "alice")
        self.assertEqual(auth.check(basic("alice", "s3cret")), "alice")  # cached
        self.assertIsNone(auth.check(basic("alice", "wrong")))
        self.assertIsNone(auth.check(basic("bob", "s3cret")))
        self.assertIsNone(auth.check(b"Basic !!!"))
        self.assertIsNone(auth.check(b"Bearer x"))
        self.assertIsNone(auth.check(None))

    def test_huge_header(self):
        """A 1 MiB Authorization value is refused by its length, before decoding."""
        auth = self.auth()
        calls = []
        auth.users["alice"] = lambda p: calls.append(p) or True
        huge = b"Basic " + base64.b64encode(b"alice:" + b"x" * (1 << 20))
        self.assertGreater(len(huge), MAX_AUTHORIZATION)
        self.assertIsNone(auth.check(huge))
        self.assertEqual(calls, [])

    def test_bad_hash(self):
        """A stored hash that is not bcrypt/argon2 is refused at load."""
        with self.assertRaises(ValueError):
            password_checker("plaintext")
        with self.assertRaises(ValueError):
            password_checker("$2b$12$short")
