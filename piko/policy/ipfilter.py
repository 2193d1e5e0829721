# -*- test-case-name: piko.test.policy.test_ipfilter -*-
"""
Who the client is, and whether its address may pass.

The client is the TCP peer, unless the peer is a configured trusted proxy:
then ``X-Forwarded-For`` is read from the right (each proxy appends the
address it saw), skipping trusted proxies, and the first address that is not
one is the client.  An entry that is not an IP address makes the client
unknown (:data:`MALFORMED`): a policy that needs the address refuses the
request rather than guess (guessing the proxy's own address could pass an
allow list meant for the proxy's network).  Headers from an untrusted peer
are ignored: anyone can send ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from attrs import field, frozen

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The client address could not be told (a malformed ``X-Forwarded-For``).
MALFORMED = "malformed"

#: ``X-Forwarded-For`` entries read at most, from the right.
MAX_HOPS = 32


def parse_networks(cidrs: Iterable[str], where: str) -> tuple[IPNetwork, ...]:
    """
    Parse CIDRs (a bare address is a /32 or /128).

    :raises ValueError: naming ``where`` and the bad entry.
    """
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{where}: invalid CIDR {cidr!r}") from None
    return tuple(networks)


#: Parsed peer addresses, by text: a server sees the same peers again and again, and
#: :func:`ipaddress.ip_address` costs microseconds.  Bounded (cleared when full).
_PARSED: dict[str, IPAddress | None] = {}
CACHE_SIZE = 4096


def parse_ip(text: str) -> IPAddress | None:
    """An address (IPv4-mapped IPv6 as IPv4; a zone or brackets removed), or None."""
    try:
        return _PARSED[text]
    except KeyError:
        pass
    address = _parse_ip(text)
    if len(_PARSED) >= CACHE_SIZE:
        _PARSED.clear()
    _PARSED[text] = address
    return address


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def contains(networks: Sequence[IPNetwork], address: IPAddress) -> bool:
    """Whether ``address`` is in one of ``networks`` (of the same family)."""
    version = address.version
    return any(n.version == version and address in n for n in networks)


def client_address(
    peer: str, forwarded_for: Sequence[bytes], trusted: Sequence[IPNetwork]
) -> IPAddress | str:
    """
    The client's address, or :data:`MALFORMED`, or the peer text when the peer
    is not an IP address (a Unix socket: the peer string itself).

    :param peer: the TCP peer's host.
    :param forwarded_for: the ``X-Forwarded-For`` values, in order.
    :param trusted: the trusted proxies.
    """
    address = parse_ip(peer)
    if address is None:
        return peer
    if not trusted or not forwarded_for or not contains(trusted, address):
        return address
    joined = b",".join(forwarded_for)
    hops = joined.rsplit(b",", MAX_HOPS)
    for hop in reversed(hops[-MAX_HOPS:]):
        hop_address = parse_ip(hop.decode("latin-1"))
        if hop_address is None:
            return MALFORMED
        address = hop_address
        if not contains(trusted, hop_address):
            return address
    if len(hops) > MAX_HOPS:
        # Still a trusted proxy after MAX_HOPS hops: too deep to believe.
        return MALFORMED
    return address


@frozen
class IPRules:
    """
    Deny first, then allow: an address in ``deny`` is refused; with an
    ``allow`` list, an address must be in it.  Verdicts are remembered per
    address (bounded), as the same clients come back.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    _verdicts: dict[IPAddress | str, bool] = field(factory=dict, eq=False, repr=False)

    def permits(self, address: IPAddress | str) -> bool:
        """Whether ``address`` may pass (a non-IP or unknown client passes only without lists)."""
        verdicts = self._verdicts
        try:
            return verdicts[address]
        except KeyError:
            pass
        verdict = self._permits(address)
        if len(verdicts) >= CACHE_SIZE:
            verdicts.clear()
        verdicts[address] = verdict
        return verdict

    def _permits(self, address: IPAddress | str) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return not self.allow and not self.deny
        if self.deny and contains(self.deny, address):
            return False
        return not self.allow or contains(self.allow, address)
