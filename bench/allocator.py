"""Allocator benchmark: allocate+release throughput by pool size, occupancy and allocation order.

Run: .venv/bin/python bench/allocator.py [--ops N] [--quick]

Two tables:
1. The free-space core (``Pool.allocate`` + ``FreeSpace.release``), the part whose cost depends on pool
   size and occupancy. Occupancy is set up cheaply: the pool is cut into up to 4096 equal segments and the
   first ``occupancy`` share of every segment is reserved as one span (so 50 % is thousands of intervals,
   not one), without creating a Service per address. Each op allocates one address and releases the one
   allocated ``window`` ops earlier (a FIFO of live allocations), so both never-used and released
   addresses get handed out.
2. The whole Allocator (``ensure`` of a new Service + ``release`` of an old one, with Decision objects),
   where occupancy comes from really adopting one Service per occupied address (so only up to 65k).
"""

from __future__ import annotations

import argparse
import collections
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.ipam import AllocationOrder, Allocator, PoolSpec, ServiceKey, ServiceRequest
from controller.ipam.addresses import int_to_ip, parse_address_block
from controller.ipam.pools import Pool

POOLS = [
    ("1k (IPv4 /22)", "10.0.0.0/22"),
    ("65k (IPv4 /16)", "10.0.0.0/16"),
    ("1M (IPv4 /12)", "10.0.0.0/12"),
    ("IPv6 /64", "fd00:1::/64"),
]
OCCUPANCY = (0.0, 0.5, 0.99)
ORDERS = (AllocationOrder.LOWEST, AllocationOrder.LEAST_RECENTLY_RELEASED)


def occupy(pool: Pool, family: str, occupancy: float) -> None:
    r = pool.ranges[family][0]
    segments = max(1, min(4096, r.size // 100))
    seg = r.size // segments
    used = int(seg * occupancy)
    if used == 0:
        return
    for i in range(segments):
        start = r.first + i * seg
        pool.free[family].reserve(start, start + used - 1)


def bench_core(cidr: str, occupancy: float, order: AllocationOrder, ops: int) -> tuple[float, int]:
    family = parse_address_block(cidr).family
    pool = Pool(PoolSpec("bench", (cidr,), allocation_order=order))
    occupy(pool, family, occupancy)
    free = pool.free[family]
    window = max(1, min(1000, free.free_count // 2))
    live: collections.deque[int] = collections.deque()
    for _ in range(window):
        value = pool.allocate(family)
        assert value is not None
        live.append(value)
    allocate, release, push, pop = pool.allocate, free.release, live.append, live.popleft
    start = time.perf_counter()
    for _ in range(ops):
        value = allocate(family)
        assert value is not None
        push(value)
        release(pop())
    elapsed = time.perf_counter() - start
    return ops / elapsed, window


def bench_allocator(cidr: str, occupancy: float, order: AllocationOrder, ops: int) -> float:
    r = parse_address_block(cidr)
    a = Allocator(clock=lambda: 0.0)
    a.set_pools([PoolSpec("bench", (cidr,), allocation_order=order)])
    occupied = int(r.size * occupancy)
    a.adopt(
        ServiceRequest(
            ServiceKey("fill", f"s{i}"),
            f"fill-{i}",
            0.0,
            (r.family,),
            current_ips=(int_to_ip(r.family, r.first + 2 * i if occupancy <= 0.5 else r.first + i),),
        )
        for i in range(occupied)
    )
    window = max(1, min(500, (r.size - occupied) // 2))
    live: collections.deque[ServiceKey] = collections.deque()
    for i in range(window):
        key = ServiceKey("bench", f"w{i}")
        a.ensure(ServiceRequest(key, f"w{i}", 0.0, (r.family,)))
        live.append(key)
    start = time.perf_counter()
    for i in range(ops):
        key = ServiceKey("bench", f"n{i}")
        d = a.ensure(ServiceRequest(key, f"n{i}", 0.0, (r.family,)))
        assert d.ips, d
        live.append(key)
        a.release(live.popleft())
    return ops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=200_000, help="allocate+release pairs per cell (core)")
    parser.add_argument("--allocator-ops", type=int, default=20_000, help="pairs per cell (Allocator)")
    args = parser.parse_args()

    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print()
    print("Free-space core: allocate+release pairs per second")
    print(f"{'pool':<16}{'occupancy':>10}  {'order':<22}{'pairs/s':>12}{'window':>8}")
    for label, cidr in POOLS:
        for occ in OCCUPANCY:
            for order in ORDERS:
                rate, window = bench_core(cidr, occ, order, args.ops)
                print(f"{label:<16}{occ:>10.0%}  {order.value:<22}{rate:>12,.0f}{window:>8}")
    print()
    print("Whole Allocator: ensure(new Service) + release(old Service) pairs per second")
    print(f"{'pool':<16}{'occupancy':>10}  {'order':<22}{'pairs/s':>12}")
    for label, cidr in POOLS[:2]:
        for occ in OCCUPANCY:
            for order in ORDERS:
                rate = bench_allocator(cidr, occ, order, args.allocator_ops)
                print(f"{label:<16}{occ:>10.0%}  {order.value:<22}{rate:>12,.0f}")


if __name__ == "__main__":
    main()
