"""Leader-election decision and timing rules, on a fake clock against an in-memory Lease API."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.kube.client import ApiError
from controller.kube.clock import FakeClock
from controller.kube.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLost

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"


class LeaseStore:
    """The API server's view: one Lease, resourceVersion-guarded updates."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.writes: list[tuple[float, str, str]] = []  # (fake time, writer, holder written)


class FakeLeaseClient:
    def __init__(self, store: LeaseStore, clock: FakeClock, name: str) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.down = False

    async def request(self, method: str, path: str, *, query: Any = None, body: Any = None,
                      content_type: str = "application/json",
                      timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("partitioned")
        s = self.store
        if method == "GET":
            assert path == LEASE_PATH
            if s.lease is None:
                raise ApiError(404, "NotFound", "not found", {})
            return copy.deepcopy(s.lease)
        if method == "POST":
            if s.lease is not None:
                raise ApiError(409, "AlreadyExists", "exists", {})
            return self._write(body)
        if method == "PUT":
            assert s.lease is not None
            if body["metadata"].get("resourceVersion") != s.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified", {})
            return self._write(body)
        raise AssertionError(method)

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        self.store.rv += 1
        lease = copy.deepcopy(body)
        lease["metadata"]["resourceVersion"] = str(self.store.rv)
        self.store.lease = lease
        self.store.writes.append((self.clock.monotonic(), self.name, lease["spec"].get("holderIdentity", "")))
        return copy.deepcopy(lease)


class Candidate:
    def __init__(self, store: LeaseStore, clock: FakeClock, name: str, *, release: bool = True) -> None:
        self.client = FakeLeaseClient(store, clock, name)
        self.clock = clock
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.log: list[str] = []
        self.leaders: list[str] = []
        cfg = LeaderElectionConfig("ns", "lock", name, 15.0, 10.0, 2.0, release_on_cancel=release)
        self.elector = LeaderElector(self.client, cfg, on_started_leading=self._started,  # type: ignore[arg-type]
                                     on_stopped_leading=self._stopped, clock=clock,
                                     on_new_leader=self.leaders.append)
        self.task: asyncio.Task[None] | None = None

    async def _started(self) -> None:
        self.started_at = self.clock.monotonic()
        self.log.append("started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.log.append("work cancelled")
            raise

    def _stopped(self) -> None:
        self.stopped_at = self.clock.monotonic()
        # Called before run() returns: the elector must already report that we do not lead.
        self.log.append(f"stopped leader={self.elector.is_leader()}")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.elector.run())


async def run_until(clock: FakeClock, predicate: Any, limit: float, step: float = 0.1) -> float:
    """Advance fake time in small steps until predicate() holds; returns elapsed fake time."""
    start = clock.monotonic()
    while not predicate():
        if clock.monotonic() - start > limit:
            raise AssertionError("condition not reached in fake time")
        for _ in range(20):
            await asyncio.sleep(0)
        clock.advance(step)
    for _ in range(20):
        await asyncio.sleep(0)
    return clock.monotonic() - start


async def teardown(*cands: Candidate) -> None:
    for c in cands:
        if c.task is not None and not c.task.done():
            c.task.cancel()
    for c in cands:
        if c.task is not None:
            await asyncio.gather(c.task, return_exceptions=True)


@contextlib.asynccontextmanager
async def election(
    *names: str, first_releases: bool = True
) -> AsyncIterator[tuple[FakeClock, LeaseStore, list[Candidate]]]:
    """Candidates on one Lease and one fake clock; the first is started and leads when the block begins
    (the others are not started); every candidate is cancelled when it ends."""
    clock, store = FakeClock(), LeaseStore()
    cands = [Candidate(store, clock, n, release=first_releases or i > 0) for i, n in enumerate(names)]
    cands[0].start()
    try:
        await run_until(clock, lambda: cands[0].started_at is not None, 5)
        yield clock, store, cands
    finally:
        await teardown(*cands)


def test_config_is_validated() -> None:
    LeaderElectionConfig("ns", "n", "me")
    with pytest.raises(ValueError):
        LeaderElectionConfig("ns", "n", "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError):
        LeaderElectionConfig("ns", "n", "me", renew_deadline=2.4, retry_period=2.0)
    with pytest.raises(ValueError):
        LeaderElectionConfig("ns", "n", "")
    with pytest.raises(ValueError):
        LeaderElectionConfig("ns", "n", "me", retry_period=0)


async def test_creates_missing_lease_and_a_second_candidate_waits_while_it_is_renewed() -> None:
    async with election("a", "b") as (clock, store, (a, b)):
        assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 0
        b.start()
        await run_until(clock, lambda: clock.monotonic() >= 1060, 100)
        assert b.started_at is None and a.elector.is_leader() and not b.elector.is_leader()
        assert {w[1] for w in store.writes} == {"a"}
        assert b.elector.leader == "a"


async def test_partitioned_leader_stops_within_renew_deadline_before_anyone_takes_over() -> None:
    async with election("a", "b") as (clock, store, (a, b)):
        b.start()
        await run_until(clock, lambda: clock.monotonic() > 1020, 30)
        last_a_write = max(t for t, who, _ in store.writes if who == "a")
        a.client.down = True
        await run_until(clock, lambda: a.task is not None and a.task.done(), 30)
        assert isinstance(a.task.exception(), LeadershipLost)
        # on_stopped_leading first, then guarded work is cancelled, and only then run() raises.
        assert a.log == ["started", "stopped leader=False", "work cancelled"]
        assert a.stopped_at is not None and a.stopped_at <= last_a_write + 10.0 + 0.2
        await run_until(clock, lambda: b.started_at is not None, 40)
        assert b.started_at is not None
        # b may only take over a full lease duration after it last saw the record change.
        assert b.started_at >= last_a_write + 15.0
        assert a.stopped_at < b.started_at
        assert store.lease is not None
        assert store.lease["spec"]["holderIdentity"] == "b"
        assert store.lease["spec"]["leaseTransitions"] == 1
        assert b.leaders == ["a", "b"]


async def test_expiry_uses_local_observation_time_not_record_timestamps() -> None:
    clock, store = FakeClock(), LeaseStore()
    store.rv = 7
    store.lease = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "lock", "namespace": "ns", "resourceVersion": "7"},
        # Renewed "decades ago" by the record's clock: irrelevant, we only trust our own clock.
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 15, "leaseTransitions": 4,
                 "acquireTime": "2000-01-01T00:00:00.000000Z", "renewTime": "2000-01-01T00:00:00.000000Z"},
    }
    b = Candidate(store, clock, "b")
    seen_at = clock.monotonic()
    b.start()
    try:
        await run_until(clock, lambda: b.started_at is not None, 40)
        assert b.started_at is not None
        assert b.started_at >= seen_at + 15.0
        assert store.lease["spec"]["leaseTransitions"] == 5
    finally:
        await teardown(b)


async def test_release_on_cancel_hands_over_within_about_a_retry_period() -> None:
    async with election("a", "b") as (clock, store, (a, b)):
        b.start()
        await run_until(clock, lambda: clock.monotonic() > 1010, 20)
        assert a.task is not None
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
        assert a.log == ["started", "stopped leader=False", "work cancelled"]
        assert store.lease is not None
        assert store.lease["spec"]["holderIdentity"] == ""
        assert store.lease["spec"]["leaseDurationSeconds"] == 1
        released = clock.monotonic()
        await run_until(clock, lambda: b.started_at is not None, 30)
        assert b.started_at is not None
        # a retry with jitter is at most 2 s * 2.2; far sooner than the 15 s lease
        assert b.started_at - released <= 2.0 * 2.2 + 1.0 + 0.2


async def test_cancel_without_release_leaves_the_lease_to_expire() -> None:
    async with election("a", "b", first_releases=False) as (clock, store, (a, b)):
        b.start()
        await run_until(clock, lambda: clock.monotonic() > 1006, 10)
        assert a.task is not None
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
        last_a_write = max(t for t, who, _ in store.writes if who == "a")
        assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "a"
        await run_until(clock, lambda: b.started_at is not None, 40)
        assert b.started_at is not None and b.started_at >= last_a_write + 15.0


async def test_simultaneous_candidates_one_wins_the_race() -> None:
    clock, store = FakeClock(), LeaseStore()
    cands = [Candidate(store, clock, n) for n in "abc"]
    for c in cands:
        c.start()
    try:
        await run_until(clock, lambda: any(c.started_at is not None for c in cands), 10)
        await run_until(clock, lambda: clock.monotonic() > 1060, 80)
        leaders = [c for c in cands if c.started_at is not None]
        assert len(leaders) == 1
        assert sum(c.elector.is_leader() for c in cands) == 1
        assert {who for _, who, _ in store.writes} == {leaders[0].elector.config.identity}
    finally:
        await teardown(*cands)


async def test_frozen_leader_does_not_write_after_waking_up() -> None:
    async with election("a", "b") as (clock, store, (a, b)):
        # "Freeze" a: its event loop is not scheduled while fake time passes; b takes over.
        b.start()
        await run_until(clock, lambda: clock.monotonic() > 1003, 5)
        a_writes_before = sum(1 for _, who, _ in store.writes if who == "a")
        a.client.down = True  # a's requests would not go out while it is stopped
        await run_until(clock, lambda: b.started_at is not None, 40)
        a.client.down = False  # SIGCONT
        await run_until(clock, lambda: a.task is not None and a.task.done(), 30)
        assert sum(1 for _, who, _ in store.writes if who == "a") == a_writes_before
        assert isinstance(a.task.exception(), LeadershipLost)
        assert not a.elector.is_leader()


async def test_guarded_work_crashing_steps_down_releases_and_surfaces_the_error() -> None:
    clock, store = FakeClock(), LeaseStore()
    stopped: list[bool] = []

    async def crash() -> None:
        raise RuntimeError("worker bug")

    client = FakeLeaseClient(store, clock, "a")
    cfg = LeaderElectionConfig("ns", "lock", "a", 15.0, 10.0, 2.0)
    elector = LeaderElector(client, cfg, on_started_leading=crash,  # type: ignore[arg-type]
                            on_stopped_leading=lambda: stopped.append(True), clock=clock)
    with pytest.raises(RuntimeError, match="worker bug"):
        await asyncio.wait_for(elector.run(), 10)
    assert stopped == [True]
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == ""


class SlowFailingLeaseClient(FakeLeaseClient):
    """After ``failing`` is set, every request takes ``delay`` fake seconds and then fails, or never answers
    when ``delay`` is None (a hung API server)."""

    def __init__(self, store: LeaseStore, clock: FakeClock, name: str) -> None:
        super().__init__(store, clock, name)
        self.failing = False
        self.delay: float | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if not self.failing:
            return await super().request(method, path, **kwargs)
        if self.delay is None:
            await asyncio.Event().wait()
        else:
            await self.clock.sleep(self.delay)
        raise ConnectionError("API server unreachable")


@pytest.mark.parametrize("delay", [None, 1.5], ids=["hung", "slow-failures"])
async def test_leader_stops_by_its_renew_deadline_when_renewals_hang_or_fail_slowly(
    delay: float | None,
) -> None:
    clock, store = FakeClock(), LeaseStore()
    a = Candidate(store, clock, "a")
    slow = SlowFailingLeaseClient(store, clock, "a")
    a.client = slow
    a.elector._client = slow  # type: ignore[assignment]
    a.start()
    try:
        await run_until(clock, lambda: a.started_at is not None, 5)
        await run_until(clock, lambda: clock.monotonic() > 1007, 10, step=0.05)
        slow.failing, slow.delay = True, delay
        last_renew = max(t for t, who, _ in store.writes if who == "a")
        await run_until(clock, lambda: a.stopped_at is not None, 30, step=0.05)
        assert a.log[:2] == ["started", "stopped leader=False"]
        # Stopped at the renew deadline (to one fake-clock step), not one retry period or attempt later.
        assert a.stopped_at is not None and a.stopped_at <= last_renew + 10.0 + 0.05 + 1e-9
        await run_until(clock, lambda: a.task is not None and a.task.done(), 5, step=0.05)
        assert a.task is not None and isinstance(a.task.exception(), LeadershipLost)
    finally:
        await teardown(a)


async def test_write_budget_is_the_time_left_before_the_renew_deadline() -> None:
    clock, store = FakeClock(), LeaseStore()
    a = Candidate(store, clock, "a")
    assert a.elector.lease_remaining() == 0.0
    a.start()
    try:
        await run_until(clock, lambda: a.started_at is not None, 5, step=0.05)
        last_renew = max(t for t, who, _ in store.writes if who == "a")
        assert a.elector.lease_remaining() == pytest.approx(last_renew + 10.0 - clock.monotonic())
        a.client.down = True
        await run_until(clock, lambda: a.elector.lease_remaining() <= 0, 15, step=0.05)
        assert not a.elector.is_leader()
    finally:
        await teardown(a)


async def test_release_rereads_the_lease_when_its_resource_version_moved() -> None:
    async with election("a", "b") as (clock, store, (a, b)):
        # Someone else touched the Lease (a label, or our own renew whose answer we never got): our
        # resourceVersion is stale, the holder is still us.
        assert store.lease is not None
        store.rv += 1
        store.lease["metadata"]["resourceVersion"] = str(store.rv)
        store.lease["metadata"]["labels"] = {"touched": "yes"}
        assert a.task is not None
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
        assert store.lease["spec"]["holderIdentity"] == ""
        released = clock.monotonic()
        b.start()
        await run_until(clock, lambda: b.started_at is not None, 30)
        assert b.started_at is not None and b.started_at - released <= 2.0 * 2.2 + 1.0


async def test_release_leaves_a_lease_someone_else_took() -> None:
    async with election("a") as (_clock, store, (a,)):
        assert store.lease is not None
        store.rv += 1
        store.lease["metadata"]["resourceVersion"] = str(store.rv)
        store.lease["spec"]["holderIdentity"] = "intruder"
        assert a.task is not None
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
        assert store.lease["spec"]["holderIdentity"] == "intruder"
