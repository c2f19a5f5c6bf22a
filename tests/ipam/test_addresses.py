import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from controller.ipam import AddressError, canonical_ip, parse_address_block, parse_pool_addresses
from controller.ipam.addresses import int_to_ip, ipv4_int, parse_ip, usable_ipv4_count
from controller.ipam.model import IPV4


def rng(text: str) -> tuple[str, str, str]:
    r = parse_address_block(text)
    return r.family, str(r).split("-")[0], str(r).split("-")[1]


def test_ipv4_cidr_includes_network_and_broadcast() -> None:
    assert rng("192.168.10.0/24") == ("IPv4", "192.168.10.0", "192.168.10.255")
    assert parse_address_block("192.168.10.0/24").size == 256


def test_ipv4_range_and_single_address() -> None:
    assert rng("192.168.20.10-192.168.20.50") == ("IPv4", "192.168.20.10", "192.168.20.50")
    assert rng(" 10.0.0.1 - 10.0.0.1 ") == ("IPv4", "10.0.0.1", "10.0.0.1")
    assert rng("10.0.0.7") == ("IPv4", "10.0.0.7", "10.0.0.7")


def test_ipv6_cidr_skips_subnet_router_anycast() -> None:
    assert rng("fd00:10::/120") == ("IPv6", "fd00:10::1", "fd00:10::ff")
    assert parse_address_block("fd00:10::/120").size == 255


def test_ipv6_slash128_and_range_naming_anycast_are_honoured() -> None:
    assert rng("fd00:10::/128") == ("IPv6", "fd00:10::", "fd00:10::")
    assert rng("fd00:10::-fd00:10::5") == ("IPv6", "fd00:10::", "fd00:10::5")


def test_ipv6_slash64_size_is_exact() -> None:
    assert parse_address_block("fd00:1::/64").size == 2**64 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.168.10.1/24", "CIDR '192.168.10.1/24' has host bits set; did you mean 192.168.10.0/24?"),
        ("fd00:10::5/120", "CIDR 'fd00:10::5/120' has host bits set; did you mean fd00:10::/120?"),
        ("10.0.0.9-10.0.0.1", "range '10.0.0.9-10.0.0.1' starts after it ends (10.0.0.9 > 10.0.0.1)"),
        (
            "10.0.0.1-fd00::1",
            "range '10.0.0.1-fd00::1' mixes families: starts with IPv4, ends with IPv6",
        ),
        ("", "empty address block"),
        ("   ", "empty address block"),
        (
            "banana",
            "'banana' is not a CIDR (like 192.168.10.0/24) or a range (like 192.168.10.5-192.168.10.9)",
        ),
        ("10.0.0.0/33", "'10.0.0.0/33' is not a CIDR (like 192.168.10.0/24)"),
        ("10.0.0.1-", "'10.0.0.1-' is not a range: write it as start-end, like 192.168.10.5-192.168.10.9"),
        ("10.0.0.1-10.0.0.2-10.0.0.3", "is not a range: write it as start-end"),
        ("10.0.0.1-10.0.0.x", "range '10.0.0.1-10.0.0.x': '10.0.0.x' is not an IP address"),
        ("::ffff:10.0.0.1", "IPv4-mapped IPv6 address; write 10.0.0.1 instead"),
    ],
)
def test_rejections_are_precise(text: str, message: str) -> None:
    with pytest.raises(AddressError) as err:
        parse_address_block(text)
    assert message in str(err.value)


def test_pool_blocks_must_not_overlap_each_other() -> None:
    with pytest.raises(AddressError) as err:
        parse_pool_addresses(["10.0.0.200-10.0.1.5", "10.0.0.0/24"])
    assert str(err.value) == "address blocks '10.0.0.0/24' and '10.0.0.200-10.0.1.5' overlap"


def test_pool_needs_addresses_and_mixes_families_across_blocks() -> None:
    with pytest.raises(AddressError, match="the pool has no addresses"):
        parse_pool_addresses([])
    ranges = parse_pool_addresses(["fd00::/126", "10.0.0.0/30"])
    assert [r.family for r in ranges] == ["IPv4", "IPv6"]


def test_pool_reports_the_first_bad_block() -> None:
    with pytest.raises(AddressError, match="host bits set"):
        parse_pool_addresses(["10.0.0.0/24", "10.0.1.1/24"])


def test_usable_ipv4_count_skips_dot0_and_dot255_without_walking() -> None:
    first, last = parse_address_block("10.0.0.0/23").first, parse_address_block("10.0.0.0/23").last
    assert usable_ipv4_count(first, last) == 2 * 254
    edge = parse_address_block("10.0.0.255").first
    assert usable_ipv4_count(edge, edge + 1) == 0  # 10.0.0.255-10.0.1.0
    assert usable_ipv4_count(edge + 2, edge + 1) == 0  # empty span
    whole = parse_address_block("16.0.0.0/4")
    assert usable_ipv4_count(whole.first, whole.last) == 2**28 - 2 * 2**20
    for a in range(0, 600, 7):
        for b in range(a - 1, a + 300, 13):
            assert usable_ipv4_count(a, b) == sum(1 for v in range(a, b + 1) if v % 256 not in (0, 255))


def test_canonical_ip() -> None:
    assert canonical_ip("FD00:0010:0000::0005") == "fd00:10::5"
    with pytest.raises(AddressError, match="is not an IP address"):
        canonical_ip("10.0.0")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv4_spelled_and_read_back_exactly_as_ipaddress_does(value: int) -> None:
    text = int_to_ip(IPV4, value)
    assert text == str(ipaddress.IPv4Address(value))
    assert ipv4_int(text) == value
    assert parse_ip(text) == (IPV4, value)


@given(st.one_of(
    st.text(alphabet="0123456789.", max_size=20),
    st.lists(st.integers(min_value=0, max_value=999).map(str) | st.sampled_from(["00", "01", "007", "", "٣"]),
             min_size=3, max_size=5).map(".".join),
    st.text(max_size=20),
))
@example("1.2.3.\u0663")  # a non-ASCII digit
@example("01.2.3.4")
@example("1.2.3.256")
def test_the_ipv4_fast_path_agrees_with_ipaddress(text: str) -> None:
    """ipv4_int reads exactly the canonical IPv4 spellings: the integer ipaddress reads, nothing else."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    canonical = isinstance(ip, ipaddress.IPv4Address) and str(ip) == text
    assert ipv4_int(text) == (int(ip) if canonical and ip is not None else None)
