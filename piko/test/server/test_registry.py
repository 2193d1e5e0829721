"""Tests for :mod:`piko.server.registry`."""

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from piko.server.registry import IUpstreamRegistry, UpstreamRegistry


class RegistryTests(SynchronousTestCase):
    def test_provides_interface(self) -> None:
        """The registry provides IUpstreamRegistry."""
        self.assertTrue(verifyObject(IUpstreamRegistry, UpstreamRegistry()))

    def test_round_robin_in_connect_order(self) -> None:
        """Selection cycles through the upstreams in the order they connected."""
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        for name in ("a", "b", "c"):
            registry.add("ep", name)
        self.assertEqual([registry.select("ep") for _ in range(6)], list("abcabc"))

    def test_removal_keeps_cursor(self) -> None:
        """After a removal the cursor stays modulo the new length, as Go's balancer."""
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        for name in ("a", "b", "c"):
            registry.add("ep", name)
        self.assertEqual([registry.select("ep"), registry.select("ep")], ["a", "b"])
        registry.remove("ep", "c")
        self.assertEqual([registry.select("ep") for _ in range(3)], ["a", "b", "a"])

    def test_unknown_endpoint(self) -> None:
        """An endpoint without upstreams selects nothing."""
        self.assertIsNone(UpstreamRegistry().select("nope"))

    def test_remove_idempotent(self) -> None:
        """Removing the same upstream twice changes the counts once (Go double-decrements)."""
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        changes: list[tuple[str, int]] = []
        registry.observe(lambda ep, count: changes.append((ep, count)))
        registry.add("ep", "a")
        registry.add("ep", "b")
        self.assertTrue(registry.remove("ep", "a"))
        self.assertFalse(registry.remove("ep", "a"))
        self.assertEqual(changes, [("ep", 1), ("ep", 2), ("ep", 1)])
        self.assertEqual(registry.endpoints(), {"ep": 1})
        self.assertEqual(registry.upstream_count, 1)

    def test_last_removal_drops_endpoint(self) -> None:
        """An endpoint whose last upstream leaves is no longer listed."""
        registry: UpstreamRegistry[str] = UpstreamRegistry()
        registry.add("ep", "a")
        registry.remove("ep", "a")
        self.assertEqual(registry.endpoints(), {})
