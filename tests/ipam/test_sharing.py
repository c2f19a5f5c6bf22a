from controller.ipam import Port
from controller.ipam.sharing import SharingTerms, compatible, incompatibility

TCP80 = frozenset({Port("TCP", 80)})
UDP53 = frozenset({Port("UDP", 53)})
TCP53 = frozenset({Port("TCP", 53)})


def test_needs_equal_non_empty_keys() -> None:
    assert (
        incompatibility(SharingTerms(None, TCP80, None), SharingTerms(None, UDP53, None)) == "no sharing key"
    )
    assert incompatibility(SharingTerms("", TCP80, None), SharingTerms("", UDP53, None)) == "no sharing key"
    assert incompatibility(SharingTerms("a", TCP80, None), SharingTerms("b", UDP53, None)) == (
        "sharing keys differ ('a' vs 'b')"
    )
    assert compatible(SharingTerms("a", TCP80, None), SharingTerms("a", UDP53, None))


def test_ports_must_be_disjoint_by_protocol_and_port() -> None:
    assert compatible(SharingTerms("k", UDP53, None), SharingTerms("k", TCP53, None))
    assert incompatibility(SharingTerms("k", TCP80 | UDP53, None), SharingTerms("k", TCP80, None)) == (
        "ports overlap (TCP/80)"
    )


def test_local_policy_needs_identical_backends() -> None:
    assert compatible(SharingTerms("k", TCP80, "app=web"), SharingTerms("k", UDP53, "app=web"))
    why = "externalTrafficPolicy Local needs identical selectors"
    assert incompatibility(SharingTerms("k", TCP80, "app=web"), SharingTerms("k", UDP53, "app=db")) == why
    assert incompatibility(SharingTerms("k", TCP80, "app=web"), SharingTerms("k", UDP53, None)) == why
