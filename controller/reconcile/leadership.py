"""The gate every API write passes: once leadership is lost, no write leaves this process."""

from __future__ import annotations

from collections.abc import Callable


class NotLeader(Exception):
    """Raised instead of writing when this replica does not (or no longer) lead."""


class WriteGate:
    """Open while leading. `still_leading` is asked before each write too: after a freeze (SIGSTOP,
    a long GC pause) a worker can run before the elector notices the lease is gone, and the elector's
    monotonic-clock check says so at once."""

    def __init__(self, still_leading: Callable[[], bool] | None = None) -> None:
        self._open = False
        self._still_leading = still_leading

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    def guard(self, still_leading: Callable[[], bool]) -> None:
        self._still_leading = still_leading

    @property
    def is_open(self) -> bool:
        return self._open

    def check(self) -> None:
        if not self._open:
            raise NotLeader("not the leader: refusing to write")
        if self._still_leading is not None and not self._still_leading():
            self._open = False
            raise NotLeader("leadership not renewed in time: refusing to write")
