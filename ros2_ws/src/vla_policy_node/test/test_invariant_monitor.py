"""The invariant monitor judges "a command while holding" by the time the node sent each message, not by the
order a starved executor takes them in (one message per ready subscription per wake-up)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("std_msgs.msg")

from invariant_monitor import RUNNING, InvariantMonitor
from std_msgs.msg import Float64MultiArray
from vla_msgs.msg import PolicyStatus

HOLDING = 3


class _NoSubscriptions:
    """The monitor's callbacks are driven by hand here, so no ROS graph is needed."""

    def create_subscription(self, *args: Any, **kwargs: Any) -> None:
        return None


def _monitor() -> InvariantMonitor:
    return InvariantMonitor(
        _NoSubscriptions(), {"arm": ("j0",)}, lower=-2.0, upper=2.0, max_velocity=1.0, control_period=0.02
    )


def _info(sent: float) -> dict[str, int]:
    return {"source_timestamp": int(sent * 1e9), "received_timestamp": 0}


def _command(m: InvariantMonitor, value: float, sent: float) -> None:
    m._on_command("arm", Float64MultiArray(data=[value]), _info(sent))


def _status(m: InvariantMonitor, state: int, sent: float) -> None:
    m._on_status(PolicyStatus(state=state, reason=""), _info(sent))


def test_a_command_sent_while_running_but_taken_after_a_hold_status_is_no_violation() -> None:
    m = _monitor()
    _status(m, RUNNING, 100.0)
    _command(m, 0.00, 100.02)
    # the statuses of a brief hold reach the monitor before the commands sent just before the hold
    _status(m, HOLDING, 100.10)
    _status(m, HOLDING, 100.20)
    _command(m, 0.01, 100.04)
    _command(m, 0.02, 100.06)
    _status(m, RUNNING, 100.30)
    assert m.violation_count == 0, m.violations


def test_a_command_sent_while_holding_is_a_violation_even_when_taken_late() -> None:
    m = _monitor()
    _status(m, RUNNING, 100.0)
    _command(m, 0.00, 100.02)
    _status(m, HOLDING, 100.10)
    _status(m, HOLDING, 100.20)
    _status(m, RUNNING, 100.30)
    _command(m, 0.02, 100.15)  # a move sent between two HOLDING statuses, taken after the recovery
    assert m.violation_count == 1, m.violations
    assert "while HOLDING" in m.violations[0]


def test_a_repeated_command_while_holding_is_the_hold() -> None:
    m = _monitor()
    _status(m, RUNNING, 100.0)
    _command(m, 0.00, 100.02)
    _status(m, HOLDING, 100.10)
    _command(m, 0.00, 100.12)
    _status(m, HOLDING, 100.20)
    assert m.violation_count == 0, m.violations
