"""A seeded random long run against the real API server, checking the invariants of design §2 after each step.

Steps: create Services (SingleStack v4/v6, PreferDualStack, RequireDualStack; random ports; sometimes a
sharing key, a requested IP that is free, taken or outside every pool, or `orphan-policy: reassign`),
delete them, change their own inputs, grow and shrink pools, add and remove a second pool, restart every
controller (SIGTERM) and kill -9 the leader. After each step the run waits until the system settles, then
checks uniqueness, stability, liveness and convergence from the outside. At the end every controller is
restarted once more and nothing may change.

The default seed is fixed so that CI is repeatable; STABLELB_CHAOS_SEED=random draws a fresh one (as
`make chaos` does), and STABLELB_CHAOS_SEED=N replays a run (the seed is in every failure message).
STABLELB_CHAOS_STEPS sets its length.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import secrets
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from e2e.harness.rest import ApiError
from e2e.randomized_support import (
    KINDS,
    ORPHAN_POLICY,
    REQUEST,
    SHARING,
    V4,
    V6,
    PoolModel,
    Snapshot,
    StepRules,
    liveness_violations,
    orphan_violations,
    request_violations,
    restart_write_violations,
    stability_violations,
    uniqueness_violations,
)
from e2e.support import Scenario

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DEFAULT_STEPS = 16
# Seed 3 found a stale-condition bug (a requested IP leaving its pool); kept as the CI default.
DEFAULT_SEED = 3
QUIET = 1.0  # a settled system: no Service written for this long (and everything that clearly fits has IPs)
CONVERGENCE = 2.0  # then this long again with zero writes
SETTLE_TIMEOUT = 60.0
MAX_SERVICES = 12
MAX_HOST = 10  # pools grow up to host number 10 of their prefix
PORTS = [("TCP", 80), ("TCP", 443), ("TCP", 8080), ("UDP", 53)]
KEYS = ["k1", "k2"]
OUTSIDE = {V4: "192.168.179.9", V6: "fd00:179::9"}  # never in any pool of this run


class ChaosRun:
    def __init__(self, s: Scenario, seed: int, steps: int) -> None:
        self.s = s
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.step_no = 0
        self.names = 0
        self.pools: dict[str, PoolModel] = {}
        self.killed: set[int] = set()  # controller indices this run stopped or killed on purpose
        self.deaths: list[str] = []
        self.last = Snapshot(())
        self.rules = StepRules()

    # -- observation ------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot.of(self.s.api.get(self.s.svc_path()).get("items", []))

    def pool_list(self) -> list[PoolModel]:
        return list(self.pools.values())

    def fail(self, what: str, snap: Snapshot | None = None) -> None:
        try:
            described = self.s.describe()
        except Exception as err:  # the report must never hide the violation itself
            described = f"(describe() failed: {err!r})"
        steps = "\n".join(self.log[-40:])
        raise AssertionError(
            f"{what}\n\nseed={self.seed} (replay: STABLELB_CHAOS_SEED={self.seed} "
            f"STABLELB_CHAOS_STEPS={self.steps}), step {self.step_no}\n"
            f"pools: {[p.describe() for p in self.pools.values()]}\n"
            f"steps so far:\n{steps}\n\nServices before this step:\n{self.last.table()}\n\n"
            f"Services now:\n{(snap or self.snapshot()).table()}\n\n"
            f"unexpected controller exits: {self.deaths}\n\n{described}"
        )

    def note(self, text: str) -> None:
        self.log.append(f"[{self.step_no:>3}] {text}")

    # -- controllers ------------------------------------------------------------------------------
    def check_controllers(self) -> None:
        """Replace a controller that exited on its own (e.g. lost its lease under load) and remember it."""
        group = self.s.controllers
        for i in range(len(group)):
            if i in self.killed or group.alive(i):
                continue
            self.killed.add(i)
            tail = "\n".join(group.logs(i).splitlines()[-5:])
            self.deaths.append(
                f"{group.identity(i)} exit {group.returncode(i)} at step {self.step_no}: {tail}"
            )
            warnings.warn(f"chaos seed {self.seed}: {self.deaths[-1]}", stacklevel=1)
            self.s.start(1)

    def live_controllers(self) -> list[int]:
        group = self.s.controllers
        return [i for i in range(len(group)) if i not in self.killed and group.alive(i)]

    def leader_caught_up(self, services: int) -> bool:
        """The leader holds the Lease and has reconciled every Service at least once, queue empty."""
        i = self.s.leader_index()
        if i is None:
            return False
        try:
            status, text = self.s.http_get(i, "/metrics")
        except OSError:
            return False
        if status != 200:
            return False
        done = _metric(text, r'stablelb_reconcile_duration_seconds_count\{kind="Service"\}')
        depth = _metric(text, r'stablelb_workqueue_depth\{name="services"\}')
        return done >= services and depth == 0

    # -- settling and checks ----------------------------------------------------------------------
    async def settle(self, *, need_leader_pass: bool = False) -> Snapshot:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last_rvs: dict[str, str] | None = None
        changed_at = time.monotonic()
        before = self.last
        while True:
            snap = self.snapshot()
            now = time.monotonic()
            if snap.rvs() != last_rvs:
                last_rvs, changed_at = snap.rvs(), now
                # An IP that must not move must not move even for a moment.
                self.check_transient(before, snap)
            problems = liveness_violations(snap, self.pool_list())
            quiet = not problems and now - changed_at >= QUIET
            if quiet and (not need_leader_pass or self.leader_caught_up(len(snap.services))):
                return snap
            if now > deadline:
                self.check_controllers()
                why = (
                    f"liveness (§2.3): never satisfied within {SETTLE_TIMEOUT:.0f}s: {problems}"
                    if problems
                    else f"did not settle within {SETTLE_TIMEOUT:.0f}s (writes kept coming, or no leader "
                    f"caught up: leader={self.s.leader_index()})"
                )
                self.fail(why, snap)
            await asyncio.sleep(0.15)

    def check_transient(self, before: Snapshot, snap: Snapshot) -> None:
        rules = self.rules
        problems = stability_violations(before, snap, StepRules(rules.touched, False), self.pool_list())
        if problems:
            self.fail(f"stability (§2.2) violated while settling: {problems}", snap)
        problems = uniqueness_violations(snap)
        if problems:
            self.fail(f"uniqueness (§2.1) violated while settling: {problems}", snap)

    async def verify(self, *, need_leader_pass: bool = False) -> None:
        snap = await self.settle(need_leader_pass=need_leader_pass)
        await asyncio.sleep(CONVERGENCE)
        quiet = self.snapshot()
        if quiet.rvs() != snap.rvs():
            moved = [
                f"{o.name}: rv {snap.by_uid()[o.uid].rv if o.uid in snap.by_uid() else '-'} -> {o.rv}"
                for o in quiet.services
                if snap.rvs().get(o.uid) != o.rv
            ]
            self.fail(f"convergence (§2.6): writes after settling, within {CONVERGENCE}s: {moved}", quiet)
        pools = self.pool_list()
        checks: list[tuple[str, Callable[[], list[str]]]] = [
            ("uniqueness (§2.1)", lambda: uniqueness_violations(quiet)),
            ("stability (§2.2)", lambda: stability_violations(self.last, quiet, self.rules, pools)),
            ("liveness (§2.3)", lambda: liveness_violations(quiet, pools)),
            (
                "no writes on restart/failover (§2.4 source of truth, §2.6 convergence)",
                lambda: restart_write_violations(self.last, quiet) if self.rules.frozen else [],
            ),
            ("requested IPs", lambda: request_violations(quiet)),
            ("orphan retain policy (§3.4)", lambda: orphan_violations(quiet, pools)),
        ]
        for name, check in checks:
            problems = check()
            if problems:
                self.fail(f"{name} violated: {problems}", quiet)
        self.last = quiet
        self.note("settled: " + "; ".join(f"{o.name}={','.join(o.ips) or '-'}" for o in quiet.services))

    # -- steps ------------------------------------------------------------------------------------
    def new_name(self) -> str:
        self.names += 1
        return f"s{self.names}"

    def pick_request(self, family: str) -> tuple[str, str]:
        """A requested IP of `family`: free, held by another Service, or outside every pool."""
        held = self.last.held()
        in_pools = sorted({ip for p in self.pools.values() for ip in p.addresses(family)})
        free = [ip for ip in in_pools if ip not in held]
        taken = [ip for ip in in_pools if ip in held]
        roll = self.rng.random()
        if roll < 0.5 and free:
            return self.rng.choice(free), "free"
        if roll < 0.9 and taken:
            ip = self.rng.choice(taken)
            return ip, f"held by {[o.name for o in held[ip]]}"
        return OUTSIDE[family], "outside"

    def step_create(self) -> None:
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            kind = self.rng.choice(list(KINDS))
            families, policy = KINDS[kind]
            ports = self.rng.sample(PORTS, self.rng.choice([1, 1, 2]))
            annotations: dict[str, str] = {}
            if self.rng.random() < 0.35:
                annotations[SHARING] = self.rng.choice(KEYS)
            how = ""
            if policy == "SingleStack" and self.rng.random() < 0.3:
                annotations[REQUEST], how = self.pick_request(families[0])
            if self.rng.random() < 0.15:
                annotations[ORPHAN_POLICY] = "reassign"
            name = self.new_name()
            self.s.create_service(
                name, ports=ports, annotations=annotations, families=families, policy=policy
            )
            self.note(f"create {name} {kind} ports={ports} {annotations} {how}")

    def step_delete(self) -> None:
        victim = self.rng.choice(self.last.services)
        self.s.delete_service(victim.name)
        self.note(f"delete {victim.name} (held {list(victim.ips)})")

    def step_change(self) -> None:
        o = self.rng.choice(self.last.services)
        options = ["sharing"]
        if o.policy == "SingleStack":
            options.append("request")
        if o.requested:
            options.append("unrequest")
        options.append("orphan-policy")
        what = self.rng.choice(options)
        ann: dict[str, str | None]
        if what == "sharing":
            ann = {SHARING: self.rng.choice([k for k in [*KEYS, None] if k != o.sharing_key])}
        elif what == "request":
            ip, how = self.pick_request(o.families[0])
            ann = {REQUEST: ip}
            what += f" ({how})"
        elif what == "unrequest":
            ann = {REQUEST: None}
        else:
            ann = {ORPHAN_POLICY: None if o.reassign else "reassign"}
        self.s.patch_service(o.name, {"metadata": {"annotations": ann}})
        self.rules.touched.add(o.uid)
        self.note(f"change {o.name} {what}: {ann} (held {list(o.ips)})")

    def step_grow(self) -> None:
        pool = self.rng.choice(self.pool_list())
        family = self.rng.choice([V4, V6])
        bounds = pool.ranges.get(family)
        by = self.rng.randint(1, 3)
        if bounds is None:
            pool.ranges[family] = (1, by)
        elif bounds[0] > 1 and self.rng.random() < 0.5:
            pool.ranges[family] = (max(1, bounds[0] - by), bounds[1])
        else:
            pool.ranges[family] = (bounds[0], min(MAX_HOST, bounds[1] + by))
        self.s.patch_pool(pool.full_name, {"addresses": pool.spec_addresses()})
        self.note(f"grow {pool.full_name} {family}: {bounds} -> {pool.ranges[family]}")

    def step_shrink(self) -> None:
        """Drops 1-3 addresses at either end (low ones are the assigned ones), or a whole family."""
        pool = self.rng.choice(self.pool_list())
        family = self.rng.choice([f for f in (V4, V6) if pool.ranges.get(f)])
        lo, hi = pool.ranges[family] or (1, 0)
        other = V6 if family == V4 else V4
        by = self.rng.randint(1, 3)
        before = pool.addresses(family)
        if hi - lo < by and pool.ranges.get(other):
            pool.ranges[family] = None
        elif self.rng.random() < 0.5:
            pool.ranges[family] = (min(hi, lo + by), hi)
        else:
            pool.ranges[family] = (lo, max(lo, hi - by))
        dropped = before - pool.addresses(family)
        holders = {ip: [o.name for o in self.last.held().get(ip, [])] for ip in sorted(dropped)}
        self.s.patch_pool(pool.full_name, {"addresses": pool.spec_addresses()})
        self.note(
            f"shrink {pool.full_name} {family}: ({lo}, {hi}) -> {pool.ranges[family]}; "
            f"dropped (holders, who keep them under retain unless reassign): {holders}"
        )

    def step_second_pool(self) -> None:
        name = next((n for n in self.pools if n.endswith("-p2")), None)
        if name is not None:
            pool = self.pools.pop(name)
            holders = {
                ip: [o.name for o in v] for ip, v in self.last.held().items() if ip in pool.all_addresses()
            }
            self.s.delete_pool(name)
            self.note(f"remove pool {name}; its holders keep their IPs (retain): {holders}")
            return
        ranges: dict[str, tuple[int, int] | None] = {
            V4: (1, self.rng.randint(1, 3)),
            V6: (1, self.rng.randint(1, 3)),
        }
        if self.rng.random() < 0.3:
            ranges[self.rng.choice([V4, V6])] = None
        pool = PoolModel("", "192.168.178.", "fd00:178::", ranges)
        pool.full_name = self.s.create_pool("p2", pool.spec_addresses())
        self.pools[pool.full_name] = pool
        self.note(f"add pool {pool.describe()}")

    async def step_restart(self) -> None:
        group = self.s.controllers
        old = self.live_controllers()
        for i in old:
            self.killed.add(i)
        group.stop_all()
        codes = {group.identity(i): group.returncode(i) for i in old}
        self.s.start(2)
        self.rules.frozen = True
        self.note(f"restart all controllers (SIGTERM; exit codes {codes})")

    async def step_kill_leader(self, wait_for: Any) -> None:
        leader = await wait_for(
            lambda: self.s.leader_index() is not None and str(self.s.leader_index()),
            timeout=SETTLE_TIMEOUT,
            describe=self.s.describe,
        )
        i = int(leader)
        self.killed.add(i)
        self.s.controllers.kill(i, signal.SIGKILL)
        self.s.start(1)
        self.rules.frozen = True
        self.note(f"kill -9 leader {self.s.controllers.identity(i)}")

    async def run(self, wait_for: Any) -> None:
        self.pools = {}
        p1 = PoolModel("", "192.168.177.", "fd00:177::", {V4: (1, 4), V6: (1, 3)})
        p1.full_name = self.s.create_pool("p1", p1.spec_addresses())
        self.pools[p1.full_name] = p1
        self.s.start(2)
        self.note(f"seed {self.seed}; pool {p1.describe()}; 2 controllers")
        for step in range(1, self.steps + 1):
            self.step_no = step
            self.rules = StepRules()
            self.check_controllers()
            n = len(self.last.services)
            weights = {
                "create": 5.0 if n < 4 else (2.5 if n < MAX_SERVICES else 0.0),
                "delete": 1.5 if n else 0.0,
                "change": 2.0 if n else 0.0,
                "grow": 1.0,
                "shrink": 1.0,
                "pool2": 0.8,
                "restart": 0.5 if n else 0.0,
                "kill": 0.5 if n else 0.0,
            }
            op = self.rng.choices(list(weights), weights=list(weights.values()))[0]
            try:
                if op == "create":
                    self.step_create()
                elif op == "delete":
                    self.step_delete()
                elif op == "change":
                    self.step_change()
                elif op == "grow":
                    self.step_grow()
                elif op == "shrink":
                    self.step_shrink()
                elif op == "pool2":
                    self.step_second_pool()
                elif op == "restart":
                    await self.step_restart()
                else:
                    await self.step_kill_leader(wait_for)
            except ApiError as err:
                self.fail(f"step {op} failed at the API: {err}")
            await self.verify(need_leader_pass=self.rules.frozen)

        # The end: a full restart must change nothing at all.
        self.step_no += 1
        self.rules = StepRules()
        await self.step_restart()
        await self.verify(need_leader_pass=True)
        self.check_controllers()


def _metric(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def _seed() -> int:
    env = os.environ.get("STABLELB_CHAOS_SEED", str(DEFAULT_SEED))
    return secrets.randbelow(2**32) if env == "random" else int(env)


async def test_randomized_long_run(scenario: Scenario, wait_for: Any) -> None:
    seed = _seed()
    steps = int(os.environ.get("STABLELB_CHAOS_STEPS", DEFAULT_STEPS))
    run = ChaosRun(scenario, seed, steps)
    started = time.monotonic()
    await run.run(wait_for)
    elapsed = time.monotonic() - started
    # Visible with -rP / on failure of a later assertion; the run passed.
    print(f"chaos seed={seed} steps={steps} took {elapsed:.1f}s; log:\n" + "\n".join(run.log))
