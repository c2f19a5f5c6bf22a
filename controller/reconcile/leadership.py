"""The gate every API write passes: once leadership is lost, no write leaves this process."""

from __future__ import annotations


class NotLeader(Exception):
    """Raised instead of writing when this replica does not (or no longer) lead."""


class WriteGate:
    def __init__(self) -> None:
        self._open = False

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def check(self) -> None:
        if not self._open:
            raise NotLeader("not the leader: refusing to write")
