"""Free addresses of one family in one pool, as sorted disjoint integer intervals.

Never-used free addresses live in interval lists (bisect, no per-address memory, so a /64 costs two ints).
Addresses that were handed out and then released live apart in release order, so LeastRecentlyReleased can
hand them out last; that set only holds addresses that were once assigned, so it stays small.

With ``avoid_buggy`` (IPv4 pools with avoidBuggyIPs) the .0 and .255 addresses are skipped arithmetically:
the intervals stay whole, their ends are kept on usable addresses, and counts subtract the skipped ones.
A /4 is then still one interval, not one per /24.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable

from .addresses import buggy_ipv4, usable_ipv4_count


class FreeSpace:
    def __init__(self, intervals: Iterable[tuple[int, int]] = (), *, avoid_buggy: bool = False) -> None:
        self._avoid_buggy = avoid_buggy
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._fresh_count = 0
        # released address -> None, oldest release first. OrderedDict, not dict: finding the first key of a
        # dict whose front was deleted from scans the deleted slots.
        self._released: OrderedDict[int, None] = OrderedDict()
        # min-heap over released addresses for the Lowest order; entries no longer released are skipped
        self._released_heap: list[int] = []
        for first, last in sorted(intervals):
            self._add_interval(first, last)

    # -- counts -------------------------------------------------------------------------------------------
    @property
    def free_count(self) -> int:
        return self._fresh_count + len(self._released)

    def __bool__(self) -> bool:
        return self.free_count > 0

    def __contains__(self, value: int) -> bool:
        return value in self._released or self._in_fresh(value)

    def released_order(self) -> list[int]:
        return list(self._released)

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    # -- allocation ---------------------------------------------------------------------------------------
    def allocate_lowest(self) -> int | None:
        fresh = self._starts[0] if self._starts else None
        released = self._lowest_released()
        if released is not None and (fresh is None or released < fresh):
            self._take_released(released)
            return released
        if fresh is not None:
            self._take_fresh(0, fresh)
            return fresh
        return None

    def allocate_least_recently_released(self) -> int | None:
        if self._starts:
            value = self._starts[0]
            self._take_fresh(0, value)
            return value
        if self._released:
            value = next(iter(self._released))
            self._take_released(value)
            return value
        return None

    def allocate(self, value: int) -> bool:
        """Take one given address; False when it is not free."""
        if self._avoid_buggy and buggy_ipv4(value):
            return False
        if value in self._released:
            self._take_released(value)
            return True
        idx = bisect_right(self._starts, value) - 1
        if idx >= 0 and value <= self._ends[idx]:
            self._take_fresh(idx, value)
            return True
        return False

    def reserve(self, first: int, last: int) -> int:
        """Take every free never-used address in [first, last]; returns how many. Used to build occupancy."""
        taken = 0
        idx = max(bisect_right(self._starts, first) - 1, 0)
        while idx < len(self._starts) and self._starts[idx] <= last:
            start, end = self._starts[idx], self._ends[idx]
            if end < first:
                idx += 1
                continue
            lo, hi = max(start, first), min(end, last)
            taken += self._count(lo, hi)
            pieces = [p for p in (self._trim(start, lo - 1), self._trim(hi + 1, end)) if p is not None]
            self._starts[idx : idx + 1] = [p[0] for p in pieces]
            self._ends[idx : idx + 1] = [p[1] for p in pieces]
            idx += len(pieces)
        self._fresh_count -= taken
        return taken

    def release(self, value: int) -> bool:
        """Give an address back; it is handed out again only after every never-used one (LRR order)."""
        if value in self or (self._avoid_buggy and buggy_ipv4(value)):
            return False
        self._add_released(value)
        return True

    def restore_release_order(self, order: Iterable[int]) -> None:
        """Carry release history over from an older FreeSpace: those still-free addresses move to the back."""
        for value in order:
            if self._in_fresh(value):
                idx = bisect_right(self._starts, value) - 1
                self._take_fresh(idx, value)
                self._add_released(value)

    # -- internals ----------------------------------------------------------------------------------------
    def _in_fresh(self, value: int) -> bool:
        if self._avoid_buggy and buggy_ipv4(value):
            return False
        idx = bisect_right(self._starts, value) - 1
        return idx >= 0 and value <= self._ends[idx]

    def _count(self, first: int, last: int) -> int:
        """Usable addresses in [first, last]."""
        if last < first:
            return 0
        if self._avoid_buggy:
            return usable_ipv4_count(first, last)
        return last - first + 1

    def _trim(self, first: int, last: int) -> tuple[int, int] | None:
        """[first, last] with both ends moved onto usable addresses; None when none is usable."""
        if self._avoid_buggy:
            low = first & 0xFF
            first += 1 if low == 0 else 2 if low == 0xFF else 0
            high = last & 0xFF
            last -= 1 if high == 0xFF else 2 if high == 0 else 0
        return (first, last) if first <= last else None

    def _add_interval(self, first: int, last: int) -> None:
        trimmed = self._trim(first, last)
        if trimmed is None:
            return
        first, last = trimmed
        if self._ends and self._count(self._ends[-1] + 1, first - 1) == 0:
            # touching, or only skipped addresses in between: one interval
            self._fresh_count += self._count(max(first, self._ends[-1] + 1), last)
            self._ends[-1] = max(self._ends[-1], last)
            return
        self._starts.append(first)
        self._ends.append(last)
        self._fresh_count += self._count(first, last)

    def _take_fresh(self, idx: int, value: int) -> None:
        start, end = self._starts[idx], self._ends[idx]
        pieces = [p for p in (self._trim(start, value - 1), self._trim(value + 1, end)) if p is not None]
        self._starts[idx : idx + 1] = [p[0] for p in pieces]
        self._ends[idx : idx + 1] = [p[1] for p in pieces]
        self._fresh_count -= 1

    def _add_released(self, value: int) -> None:
        self._released[value] = None
        heapq.heappush(self._released_heap, value)
        if len(self._released_heap) > 2 * len(self._released) + 64:
            self._released_heap = sorted(self._released)  # drop stale entries; a sorted list is a heap

    def _lowest_released(self) -> int | None:
        heap = self._released_heap
        while heap and heap[0] not in self._released:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _take_released(self, value: int) -> None:
        del self._released[value]
