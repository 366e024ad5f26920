"""Seconds <-> ``sec`` + ``nanosec`` (as builtin_interfaces Time and Duration and the rosbags types carry
them): the one conversion of the stack."""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def to_seconds(stamp: Any) -> float:
    """A Time or Duration (anything with ``sec`` and ``nanosec``) in seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_nanosec(seconds: float) -> tuple[int, int]:
    """(sec, nanosec) of ``seconds``, rounded to the nanosecond, 0 <= nanosec < 1e9 (sec may be < 0)."""
    return divmod(round(float(seconds) * NS_PER_S), NS_PER_S)
