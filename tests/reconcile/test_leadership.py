from __future__ import annotations

import pytest

from controller.reconcile.leadership import NotLeader, WriteGate


def test_closed_gate_refuses() -> None:
    gate = WriteGate()
    with pytest.raises(NotLeader):
        gate.check()
    gate.open()
    gate.check()
    gate.close()
    with pytest.raises(NotLeader):
        gate.check()


def test_gate_asks_the_elector_before_each_write() -> None:
    leading = [True]
    gate = WriteGate(lambda: leading[0])
    gate.open()
    gate.check()
    leading[0] = False  # e.g. the process was frozen past its renew deadline
    with pytest.raises(NotLeader, match="not renewed"):
        gate.check()
    assert not gate.is_open
    leading[0] = True
    with pytest.raises(NotLeader):  # once closed, only a new leadership term reopens it
        gate.check()
