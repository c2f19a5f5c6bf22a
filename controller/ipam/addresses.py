"""Parsing of pool address blocks (CIDRs and ``start-end`` ranges) into integer ranges."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from .model import IPV4, IPV6

_BITS = {IPV4: 32, IPV6: 128}


class AddressError(ValueError):
    """An address block or IP the user wrote cannot be used; the message says why, precisely."""


@dataclass(frozen=True, order=True)
class IPRange:
    """An inclusive range of addresses of one family, as integers."""

    family: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.first <= value <= self.last

    def overlaps(self, other: IPRange) -> bool:
        return self.family == other.family and self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return f"{int_to_ip(self.family, self.first)}-{int_to_ip(self.family, self.last)}"


def family_of(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return IPV4 if ip.version == 4 else IPV6


def int_to_ip(family: str, value: int) -> str:
    if family == IPV4:
        # What str(IPv4Address(value)) gives, without building the object: every status write and check
        # spells out addresses.
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{value} is not an IPv4 address")
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def ipv4_int(text: str) -> int | None:
    """The integer of ``text`` when it is an IPv4 address spelled the way ipaddress spells it (four decimal
    octets, no leading zeros), else None (the caller asks ipaddress). That spelling is what the API server
    and this controller write, and parsing it here costs a fraction of an ipaddress object: adopting
    thousands of Services at start reads every one."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (0 < len(part) <= 3 and part.isascii() and part.isdigit()) or (part[0] == "0" and part != "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def parse_ip(text: str) -> tuple[str, int]:
    """Parse one IP address into (family, integer); raises AddressError."""
    stripped = text.strip()
    if not stripped:
        raise AddressError("empty IP address")
    fast = ipv4_int(stripped)
    if fast is not None:
        return IPV4, fast
    if "%" in stripped:
        # Python accepts a scoped IPv6 address (fd00::9%eth0) and drops the zone from its integer value.
        raise AddressError(f"{text!r} has a zone id (%...); a load-balancer IP cannot carry one")
    try:
        ip = ipaddress.ip_address(stripped)
    except ValueError:
        raise AddressError(f"{text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # An IPv4-mapped address would make the same host reachable under two families.
        raise AddressError(f"{text!r} is an IPv4-mapped IPv6 address; write {ip.ipv4_mapped} instead")
    return family_of(ip), int(ip)


def canonical_ip(text: str) -> str:
    family, value = parse_ip(text)
    return int_to_ip(family, value)


def parse_address_block(text: str) -> IPRange:
    """Parse a CIDR (``10.0.0.0/24``) or an inclusive range (``10.0.0.5-10.0.0.9``).

    Host bits set in a CIDR are an error, never masked. An IPv6 CIDR shorter than /128 does not include its
    all-zeros (Subnet-Router anycast, RFC 4291 §2.6.1) address; a range or /128 naming it does.
    """
    stripped = text.strip()
    if not stripped:
        raise AddressError("empty address block")
    if "%" in stripped:
        raise AddressError(f"{text!r} has a zone id (%...); pool addresses cannot carry one")
    if "-" in stripped:
        return _parse_range(text, stripped)
    if "/" in stripped:
        return _parse_cidr(text, stripped)
    try:
        ipaddress.ip_address(stripped)
    except ValueError:
        raise AddressError(
            f"{text!r} is not a CIDR (like 192.168.10.0/24) or a range (like 192.168.10.5-192.168.10.9)"
        ) from None
    family, value = parse_ip(stripped)
    return IPRange(family, value, value)


def _parse_range(text: str, stripped: str) -> IPRange:
    parts = stripped.split("-")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise AddressError(f"{text!r} is not a range: write it as start-end, like 192.168.10.5-192.168.10.9")
    try:
        start_family, start = parse_ip(parts[0])
        end_family, end = parse_ip(parts[1])
    except AddressError as exc:
        raise AddressError(f"range {text!r}: {exc}") from None
    if start_family != end_family:
        raise AddressError(
            f"range {text!r} mixes families: starts with {start_family}, ends with {end_family}"
        )
    if start > end:
        raise AddressError(f"range {text!r} starts after it ends ({parts[0].strip()} > {parts[1].strip()})")
    return IPRange(start_family, start, end)


def _parse_cidr(text: str, stripped: str) -> IPRange:
    try:
        network = ipaddress.ip_network(stripped, strict=False)
    except ValueError:
        raise AddressError(f"{text!r} is not a CIDR (like 192.168.10.0/24)") from None
    address = ipaddress.ip_address(stripped.split("/", 1)[0])
    if int(address) != int(network.network_address):
        raise AddressError(f"CIDR {text!r} has host bits set; did you mean {network}?")
    family = family_of(network.network_address)
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        raise AddressError(f"CIDR {text!r} is IPv4-mapped IPv6; write the IPv4 CIDR instead")
    first = int(network.network_address)
    last = int(network.broadcast_address)
    if family == IPV6 and network.prefixlen < 128:
        first += 1
    return IPRange(family, first, last)


def parse_pool_addresses(blocks: Iterable[str]) -> tuple[IPRange, ...]:
    """Parse every block of one pool; blocks must not overlap each other. Returns ranges sorted."""
    parsed: list[tuple[IPRange, str]] = []
    for block in blocks:
        parsed.append((parse_address_block(block), block.strip()))
    if not parsed:
        raise AddressError("the pool has no addresses")
    parsed.sort()
    for (prev, prev_text), (cur, cur_text) in itertools.pairwise(parsed):
        if prev.overlaps(cur):
            raise AddressError(f"address blocks {prev_text!r} and {cur_text!r} overlap")
    return tuple(r for r, _ in parsed)


def buggy_ipv4(value: int) -> bool:
    """IPv4 addresses ending in .0 or .255, which some clients mishandle."""
    return value & 0xFF in (0, 0xFF)


def usable_ipv4_count(first: int, last: int) -> int:
    """IPv4 addresses in [first, last] that do not end in .0 or .255, counted without walking them."""

    def below(n: int) -> int:  # usable addresses in [0, n)
        return (n >> 8) * 254 + max(0, min(n & 0xFF, 0xFF) - 1)

    return below(last + 1) - below(first) if last >= first else 0


def family_bits(family: str) -> int:
    return _BITS[family]
