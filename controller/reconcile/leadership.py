"""The gate every API write passes: once leadership is lost, no write leaves this process, and no write
outlives the lease it was started under."""

from __future__ import annotations

from collections.abc import Callable

from controller.kube.leaderelection import Fenced


class NotLeader(Fenced):
    """Raised instead of writing when this replica does not (or no longer) lead."""


class WriteGate:
    """Open while leading. `still_leading` is asked before each write too: after a freeze (SIGSTOP,
    a long GC pause) a worker can run before the elector notices the lease is gone, and the elector's
    monotonic-clock check says so at once. `lease_remaining` (seconds to the renew deadline) bounds
    how long a write may take, so none is still in flight when a standby may take over."""

    def __init__(
        self,
        still_leading: Callable[[], bool] | None = None,
        lease_remaining: Callable[[], float] | None = None,
    ) -> None:
        self._open = False
        self._still_leading = still_leading
        self._lease_remaining = lease_remaining

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def guard(
        self, still_leading: Callable[[], bool], lease_remaining: Callable[[], float] | None = None
    ) -> None:
        self._still_leading = still_leading
        self._lease_remaining = lease_remaining

    @property
    def is_open(self) -> bool:
        return self._open

    def check(self) -> None:
        if not self._open:
            raise NotLeader("not the leader: refusing to write")
        if self._still_leading is not None and not self._still_leading():
            self._open = False
            raise NotLeader("leadership not renewed in time: refusing to write")

    def write_timeout(self, timeout: float) -> float:
        """The time a write starting now may take: ``min(timeout, last_renew + renew_deadline - now)``.

        Raises NotLeader when that is nothing. The lease can only be renewed further, never less, so the
        bound computed at the start of a write stays safe for all of it.
        """
        self.check()
        if self._lease_remaining is None:
            return timeout
        remaining = self._lease_remaining()
        if remaining <= 0:
            self._open = False
            raise NotLeader("no lease time left for a write: refusing to write")
        return min(timeout, remaining)
