"""controller/ipam/explain.py: each pool's verdict names the allocator rule that held, not one of its own."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.ipam import PoolSpec, ServiceAllocation, ServiceKey
from controller.ipam.explain import Verdict, explain
from controller.ipam.model import Selector

from .conftest import IPAM_PROFILE
from .helpers import allocator, settle, svc


def verdicts(a, request, decision):  # type: ignore[no-untyped-def]
    return {v.pool: (v.verdict, v.reason) for v in explain(a, request, decision).pools}


def test_served_service_names_its_pool_and_why_every_other_is_skipped() -> None:
    a = allocator(
        PoolSpec("a-main", ("10.0.0.1-10.0.0.2",), created=1),
        PoolSpec("b-team", ("10.0.1.0/30",), created=2,
                 service_allocation=ServiceAllocation(namespaces=frozenset({"x"}))),
        PoolSpec("c-manual", ("10.0.2.0/30",), created=3, auto_assign=False),
        PoolSpec("d-off", ("10.0.3.0/30",), created=4, disabled=True),
        PoolSpec("e-bad", ("nonsense",), created=5),
        PoolSpec("f-overlap", ("10.0.0.2/32",), created=6),
        PoolSpec("g-v6", ("fd00::/126",), created=7),
        PoolSpec("h-labels", ("10.0.4.0/30",), created=8, service_allocation=ServiceAllocation(
            service_selectors=(Selector((("expose", "public"),)),))),
    )  # fmt: skip
    d, request = settle(a, svc("web"))
    got = verdicts(a, request, d)
    assert got["a-main"] == (Verdict.USED, "holds 10.0.0.1")
    assert got["b-team"] == (Verdict.SKIPPED, "namespace 'default' not in serviceAllocation.namespaces (x)")
    assert got["c-manual"][0] == Verdict.SKIPPED and got["c-manual"][1].startswith("autoAssign is false")
    assert got["d-off"] == (Verdict.SKIPPED, "disabled: no new allocations")
    assert got["e-bad"][0] == Verdict.SKIPPED and got["e-bad"][1].startswith("invalid: ")
    assert got["f-overlap"] == (Verdict.SKIPPED, "overlaps older pool 'a-main': no new allocations")
    assert got["g-v6"] == (Verdict.SKIPPED, "has no IPv4 addresses")
    assert got["h-labels"] == (
        Verdict.SKIPPED,
        "the Service's labels match no serviceAllocation.serviceSelectors",
    )
    # tried order first: the pool used leads the table
    assert explain(a, request, d).pools[0].pool == "a-main"


def test_exhausted_pool_is_why_a_service_is_pending() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.1/32",)))
    settle(a, svc("first"))
    d, request = settle(a, svc("second"))
    assert d.pending
    exp = explain(a, request, d)
    assert exp.reason == "PoolExhausted" and exp.ips == ()
    assert [(v.pool, v.verdict, v.reason) for v in exp.pools] == [
        ("p", Verdict.SKIPPED, "exhausted: no free IPv4 address")
    ]


def test_a_pool_that_could_serve_but_is_not_where_the_address_is_is_a_candidate() -> None:
    a = allocator(PoolSpec("a", ("10.0.0.0/30",)), PoolSpec("b", ("10.0.1.0/30",)))
    d, request = settle(a, svc("web"))
    got = verdicts(a, request, d)
    assert got == {
        "a": (Verdict.USED, "holds 10.0.0.0"),
        "b": (Verdict.CANDIDATE, "could serve it, but its address is in pool 'a'"),
    }


def test_requested_ip_held_by_another_names_the_holder() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)))
    settle(a, svc("holder"))
    d, request = settle(a, svc("asker", requested_ips=("10.0.0.0",)))
    exp = explain(a, request, d)
    assert exp.reason == "RequestedIPInUse" and exp.pending
    assert exp.holders == (("10.0.0.0", (ServiceKey("default", "holder"),)),)
    assert [(v.pool, v.verdict) for v in exp.pools] == [("p", Verdict.CANDIDATE)]


def test_requested_pool_and_requested_ips_skip_the_other_pools() -> None:
    a = allocator(PoolSpec("a", ("10.0.0.0/30",)), PoolSpec("gold", ("10.0.1.0/30",), auto_assign=False))
    d, request = settle(a, svc("web", requested_pool="gold"))
    assert verdicts(a, request, d) == {
        "gold": (Verdict.USED, "holds 10.0.1.0"),
        "a": (Verdict.SKIPPED, "the Service asks for pool 'gold' (annotation)"),
    }
    d, request = settle(a, svc("db", requested_ips=("10.0.0.3",)))
    assert verdicts(a, request, d)["gold"] == (Verdict.SKIPPED, "does not contain the requested IP 10.0.0.3")


def test_a_kept_orphan_is_in_no_pool() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)))
    d, request = settle(a, svc("web"))
    a.set_pools([PoolSpec("p", ("10.0.1.0/30",))])
    d, request = settle(a, request)
    exp = explain(a, request, d)
    assert exp.reason == "IPOutsidePool" and exp.ips == ("10.0.0.0",) and exp.pool is None
    assert [(v.pool, v.verdict) for v in exp.pools] == [("p", Verdict.CANDIDATE)]


def _pools(shapes: list[tuple[int, int, bool, bool, bool, bool]]) -> list[PoolSpec]:
    return [
        PoolSpec(
            f"p{i}",
            (f"10.0.{i}.{first}-10.0.{i}.{first + size}",) + ((f"fd00:{i}::/126",) if v6 else ()),
            created=float(i),
            auto_assign=auto,
            disabled=disabled,
            service_allocation=ServiceAllocation(namespaces=frozenset({"a"})) if only_a else None,
        )
        for i, (first, size, v6, auto, disabled, only_a) in enumerate(shapes)
    ]


pool_specs = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 2), st.booleans(), st.booleans(), st.booleans(), st.booleans()
    ),
    max_size=4,
).map(_pools)
requests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from([("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")]),
        st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(settings.get_profile(IPAM_PROFILE), max_examples=300)
@given(pool_specs, requests)
def test_an_explanation_never_contradicts_the_decision(pools: list[PoolSpec], reqs: list[Any]) -> None:
    """The pool a Service uses holds its addresses; a Service pending for want of a pool has every pool
    skipped with a reason (were one a candidate, the allocator would have taken from it)."""
    a = allocator(*pools)
    for i, (ns, families, policy) in enumerate(reqs):
        d, request = settle(a, svc(f"s{i}", ns=ns, families=families, policy=policy))
        exp = explain(a, request, d)
        used = [v.pool for v in exp.pools if v.verdict == Verdict.USED]
        if d.pool is not None:
            assert used == [d.pool]
        if d.pending and not d.ips and d.reason.value in ("NoPool", "PoolExhausted", "FamilyUnavailable"):
            assert all(v.verdict == Verdict.SKIPPED for v in exp.pools), exp
