"""Store indexes, object keys and the reflector's backoff, on a fake clock."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.kube.backoff import Backoff
from controller.kube.clock import FakeClock
from controller.kube.resources import IPPOOLS, LEASES, SERVICES
from controller.kube.store import Store, object_key


def obj(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta}


def test_object_keys() -> None:
    assert object_key(obj("a", "ns")) == "ns/a"
    assert object_key(obj("pool")) == "pool"


def test_index_follows_updates_and_deletes() -> None:
    store = Store()
    store.put(obj("a", "ns", pool="p1"))
    labels = lambda o: o["metadata"]["labels"]  # noqa: E731
    store.add_index("pool", lambda o: [labels(o)["pool"]] if "pool" in labels(o) else [])
    store.put(obj("b", "ns", pool="p1"))
    assert [o["metadata"]["name"] for o in store.by_index("pool", "p1")] == ["a", "b"]
    store.put(obj("a", "ns", pool="p2"))
    assert [o["metadata"]["name"] for o in store.by_index("pool", "p1")] == ["b"]
    assert [o["metadata"]["name"] for o in store.by_index("pool", "p2")] == ["a"]
    store.delete("ns/b")
    assert store.by_index("pool", "p1") == []
    assert sorted(store.keys()) == ["ns/a"]
    with pytest.raises(ValueError):
        store.add_index("pool", lambda o: [])


def test_resource_paths() -> None:
    assert SERVICES.path() == "/api/v1/services"
    assert SERVICES.path("ns", "web", "status") == "/api/v1/namespaces/ns/services/web/status"
    assert IPPOOLS.path(name="p") == "/apis/stablelb.io/v1alpha1/ippools/p"
    assert LEASES.path("kube-system", "x") == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x"
    with pytest.raises(ValueError):
        IPPOOLS.path(namespace="ns")


def test_backoff_doubles_with_jitter_caps_at_30s_and_resets_after_two_healthy_minutes() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base <= delay <= 2 * base
    clock.advance(60)
    assert backoff.next_delay() >= 30.0, "one minute of health is not enough to forget"
    clock.advance(121)
    assert 0.8 <= backoff.next_delay() <= 1.6
