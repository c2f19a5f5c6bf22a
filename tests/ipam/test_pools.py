from controller.ipam import (
    AllocationOrder,
    PoolSpec,
    Selector,
    SelectorRequirement,
    ServiceAllocation,
    ServiceKey,
    ServiceRequest,
)
from controller.ipam.pools import Pool, choose_pools, find_conflicts, validate_pool


def req(
    ns: str = "default",
    *,
    pool: str | None = None,
    labels: dict[str, str] | None = None,
    ns_labels: dict[str, str] | None = None,
) -> ServiceRequest:
    return ServiceRequest(
        ServiceKey(ns, "svc"),
        "uid",
        0.0,
        ("IPv4",),
        requested_pool=pool,
        labels=tuple((labels or {}).items()),
        namespace_labels=tuple((ns_labels or {}).items()),
    )


def pools(*specs: PoolSpec) -> dict[str, Pool]:
    out = {s.name: Pool(s) for s in specs}
    for name, other in find_conflicts(out.values()).items():
        out[name].conflict_with = other
    return out


def test_validate_reports_address_errors() -> None:
    _, why = validate_pool(PoolSpec("p", ("10.0.0.1/24",)))
    assert why == "CIDR '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"
    _, why = validate_pool(PoolSpec("p", ()))
    assert why == "the pool has no addresses"
    _, why = validate_pool(PoolSpec("", ("10.0.0.0/24",)))
    assert why == "the pool has no name"


def test_validate_reports_bad_selectors_and_order() -> None:
    bad_op = ServiceAllocation(
        service_selectors=(Selector(match_expressions=(SelectorRequirement("a", "Is"),)),)
    )
    _, why = validate_pool(PoolSpec("p", ("10.0.0.0/24",), service_allocation=bad_op))
    assert why == (
        "serviceAllocation.serviceSelectors: operator 'Is' of key 'a' is not one of "
        "In, NotIn, Exists, DoesNotExist"
    )
    no_values = ServiceAllocation(
        namespace_selectors=(Selector(match_expressions=(SelectorRequirement("a", "In"),)),)
    )
    _, why = validate_pool(PoolSpec("p", ("10.0.0.0/24",), service_allocation=no_values))
    assert why == "serviceAllocation.namespaceSelectors: operator In of key 'a' needs values"
    extra = ServiceAllocation(
        namespace_selectors=(Selector(match_expressions=(SelectorRequirement("a", "Exists", ("x",)),)),)
    )
    _, why = validate_pool(PoolSpec("p", ("10.0.0.0/24",), service_allocation=extra))
    assert why == "serviceAllocation.namespaceSelectors: operator Exists of key 'a' takes no values"
    _, why = validate_pool(PoolSpec("p", ("10.0.0.0/24",), allocation_order="Random"))  # type: ignore[arg-type]
    assert why == "allocationOrder 'Random' is not Lowest or LeastRecentlyReleased"


def test_avoid_buggy_counts() -> None:
    p = Pool(PoolSpec("p", ("10.0.0.0/24", "fd00::/120"), avoid_buggy_ips=True))
    st = p.status()
    assert st.ipv4.total == 254
    assert st.ipv6.total == 255
    assert not p.contains("IPv4", p.ranges["IPv4"][0].first - 1)


def test_newer_pool_conflicts_as_a_whole_and_names_the_older() -> None:
    ps = pools(
        PoolSpec("b-old", ("10.0.0.0/24",), created=1.0),
        PoolSpec("a-new", ("10.0.0.128/25", "10.9.0.0/24"), created=2.0),
        PoolSpec("c", ("10.1.0.0/24",), created=0.5),
    )
    assert ps["a-new"].conflict_with == "b-old"
    assert ps["b-old"].conflict_with is None and ps["c"].conflict_with is None
    assert not ps["a-new"].allocatable


def test_same_creation_time_breaks_ties_by_name_and_invalid_pools_never_conflict() -> None:
    ps = pools(
        PoolSpec("b", ("fd00::/64",), created=1.0),
        PoolSpec("a", ("fd00::1-fd00::9",), created=1.0),
        PoolSpec("bad", ("fd00::/64", "nonsense"), created=0.0),
    )
    assert ps["b"].conflict_with == "a"
    assert ps["a"].conflict_with is None
    assert ps["bad"].conflict_with is None and ps["bad"].invalid is not None


def test_conflict_names_the_oldest_overlapping_pool() -> None:
    ps = pools(
        PoolSpec("x", ("10.0.0.0/24",), created=1.0),
        PoolSpec("y", ("10.0.0.0/25",), created=2.0),
        PoolSpec("z", ("10.0.0.0/26",), created=3.0),
    )
    assert ps["z"].conflict_with == "x"
    assert ps["y"].conflict_with == "x"


def test_pool_choice_order() -> None:
    counter = iter(range(100, 200))

    def prio(name: str, priority: int | None, **kw: frozenset[str]) -> PoolSpec:
        return PoolSpec(
            name,
            (f"10.{next(counter)}.0.0/24",),
            service_allocation=ServiceAllocation(priority=priority, **kw),
        )

    ps = pools(
        PoolSpec("zz-plain", ("10.9.0.0/24",)),
        PoolSpec("aa-plain", ("10.8.0.0/24",)),
        PoolSpec("manual", ("10.7.0.0/24",), auto_assign=False),
        PoolSpec("off", ("10.6.0.0/24",), disabled=True),
        prio("p-none", None),
        prio("p10", 10),
        prio("p1b", 1),
        prio("p1a", 1),
        prio("other-ns", 0, namespaces=frozenset({"team-b"})),
    )
    names = [p.name for p in choose_pools(ps, req("team-a"))]
    assert names == ["p1a", "p1b", "p10", "p-none", "aa-plain", "zz-plain"]
    # priority 0 is no priority (MetalLB): after every prioritized pool, by name among the unset ones
    team_b = [p.name for p in choose_pools(ps, req("team-b"))]
    assert team_b[:5] == ["p1a", "p1b", "p10", "other-ns", "p-none"]
    assert [p.name for p in choose_pools(ps, req(pool="manual"))] == ["manual"]
    assert choose_pools(ps, req(pool="off")) == []
    assert choose_pools(ps, req(pool="missing")) == []
    assert choose_pools(ps, req("team-a", pool="other-ns")) == []


def test_service_allocation_selectors() -> None:
    alloc = ServiceAllocation(
        namespace_selectors=(Selector(match_labels=(("tier", "prod"),)),),
        service_selectors=(
            Selector(match_expressions=(SelectorRequirement("expose", "In", ("public", "edge")),)),
            Selector(match_expressions=(SelectorRequirement("legacy", "Exists"),)),
        ),
    )
    p = Pool(PoolSpec("sel", ("10.0.0.0/24",), service_allocation=alloc))
    assert p.allows(req(ns_labels={"tier": "prod"}, labels={"expose": "edge"}))
    assert p.allows(req(ns_labels={"tier": "prod"}, labels={"legacy": ""}))
    assert not p.allows(req(ns_labels={"tier": "dev"}, labels={"expose": "edge"}))
    assert not p.allows(req(ns_labels={"tier": "prod"}, labels={"expose": "private"}))
    not_in = Selector(
        match_expressions=(
            SelectorRequirement("x", "NotIn", ("1",)),
            SelectorRequirement("y", "DoesNotExist"),
        )
    )
    assert not_in.matches({"x": "2"}) and not_in.matches({}) and not not_in.matches({"x": "1"})
    assert not not_in.matches({"y": "a"})
    assert Selector().matches({"anything": "at all"})


def test_lowest_order_pool_allocates_lowest() -> None:
    p = Pool(PoolSpec("p", ("10.0.0.0/30",), allocation_order=AllocationOrder.LOWEST))
    first = p.allocate("IPv4")
    second = p.allocate("IPv4")
    assert first is not None and second == first + 1
    p.free["IPv4"].release(first)
    assert p.allocate("IPv4") == first


def test_namespaces_and_namespace_selectors_are_alternatives_like_metallb() -> None:
    alloc = ServiceAllocation(
        namespaces=frozenset({"team-a"}),
        namespace_selectors=(Selector(match_labels=(("tier", "prod"),)),),
        service_selectors=(Selector(match_labels=(("expose", "public"),)),),
    )
    pool = pools(PoolSpec("p", ("10.1.0.0/24",), service_allocation=alloc))["p"]
    public = {"expose": "public"}
    assert pool.allows(req("team-a", labels=public))  # a listed namespace needs no namespace labels
    assert pool.allows(req("team-z", labels=public, ns_labels={"tier": "prod"}))  # a selected namespace
    assert not pool.allows(req("team-z", labels=public))  # neither listed nor selected
    assert not pool.allows(req("team-a"))  # the Service selector still applies
