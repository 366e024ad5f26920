"""Last gate before the robot: joint position limits, max change per control tick, NaN/inf rejection.

ROS-free; works in joint space (the listed joints, state-vector order, see ``joint_groups``).
After (re)activation the first command ramps from the measured position, so the robot never jumps to
a chunk's first action.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_policy.strict_config import require


def _as_tuple(value: object) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),)
    return tuple(float(v) for v in value)  # type: ignore[union-attr]


@dataclass(frozen=True)
class SafetyFilterConfig:
    """Per-joint limits (a single value applies to every joint)."""

    position_lower: tuple[float, ...] = (-math.pi,)
    position_upper: tuple[float, ...] = (math.pi,)
    max_step: tuple[float, ...] = (0.05,)  # max change of a joint per control tick (rad or m)

    def __post_init__(self) -> None:
        for name in ("position_lower", "position_upper", "max_step"):
            try:
                object.__setattr__(self, name, _as_tuple(getattr(self, name)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"SafetyFilterConfig.{name}: expected numbers ({exc})") from exc
            values = getattr(self, name)
            require(len(values) > 0, f"SafetyFilterConfig.{name}: empty")
            require(
                all(math.isfinite(v) for v in values), f"SafetyFilterConfig.{name}: values must be finite"
            )
        require(all(v > 0 for v in self.max_step), "SafetyFilterConfig.max_step: values must be > 0")

    def arrays(self, num_joints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, max_step) broadcast to ``num_joints``; ConfigError on length mismatch."""
        out = []
        for name in ("position_lower", "position_upper", "max_step"):
            values = getattr(self, name)
            require(
                len(values) in (1, num_joints),
                f"SafetyFilterConfig.{name}: {len(values)} values for {num_joints} joints (give 1 or "
                f"{num_joints})",
            )
            out.append(np.broadcast_to(np.asarray(values, dtype=np.float64), (num_joints,)).copy())
        lower, upper, step = out
        bad = np.nonzero(lower >= upper)[0]
        require(
            bad.size == 0, f"SafetyFilterConfig: position_lower >= position_upper for joints {bad.tolist()}"
        )
        return lower, upper, step


@dataclass
class SafetyResult:
    command: np.ndarray | None  # None: nothing can be commanded (never activated, no measurement)
    held: bool = False  # the requested action was refused and the last safe command repeated
    clipped: bool = False  # a position limit was applied
    rate_limited: bool = False  # the max step was applied
    reason: str = ""


@dataclass
class SafetyStats:
    commands: int = 0
    held: int = 0
    clipped: int = 0
    rate_limited: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class SafetyFilter:
    def __init__(self, config: SafetyFilterConfig, num_joints: int) -> None:
        self.config = config
        self.num_joints = num_joints
        self.lower, self.upper, self.max_step = config.arrays(num_joints)
        self._last: np.ndarray | None = None
        self.stats = SafetyStats()

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()

    @property
    def active(self) -> bool:
        return self._last is not None

    def _valid(self, values: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        if values is None:
            return None
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.shape != (self.num_joints,) or not np.all(np.isfinite(arr)):
            return None
        return arr

    def reset(self) -> None:
        """Deactivate: the next command ramps from the measured position again."""
        self._last = None

    def activate(self, measured: np.ndarray | Sequence[float]) -> np.ndarray:
        """Start from the measured position (clipped into the limits)."""
        arr = self._valid(measured)
        if arr is None:
            raise ValueError(f"measured position must be {self.num_joints} finite values")
        self._last = np.clip(arr, self.lower, self.upper)
        return self._last.copy()

    def hold_command(self, measured: np.ndarray | Sequence[float] | None = None) -> np.ndarray | None:
        """The command that holds the robot: the measured position (clipped) when valid, else the last
        safe command; None when neither exists. Later commands ramp from it."""
        arr = self._valid(measured)
        if arr is not None:
            self._last = np.clip(arr, self.lower, self.upper)
        return None if self._last is None else self._last.copy()

    def _note(self, reason: str) -> None:
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    def filter(
        self, action: np.ndarray | Sequence[float], measured: np.ndarray | Sequence[float] | None = None
    ) -> SafetyResult:
        """The safe command for one control tick toward ``action`` ([num_joints])."""
        if self._last is None:
            start = self._valid(measured)
            if start is None:
                self.stats.held += 1
                self._note("not activated and no valid measured position")
                return SafetyResult(None, held=True, reason="not activated and no valid measured position")
            self.activate(start)
        assert self._last is not None
        target = np.asarray(action, dtype=np.float64).ravel()
        if target.shape != (self.num_joints,):
            reason = f"action has {target.size} values, expected {self.num_joints}"
            self.stats.held += 1
            self._note("wrong action size")
            return SafetyResult(self._last.copy(), held=True, reason=reason)
        if not np.all(np.isfinite(target)):
            self.stats.held += 1
            self._note("non-finite action")
            return SafetyResult(self._last.copy(), held=True, reason="non-finite action rejected")
        clipped_target = np.clip(target, self.lower, self.upper)
        clipped = bool(np.any(clipped_target != target))
        delta = clipped_target - self._last
        limited_delta = np.clip(delta, -self.max_step, self.max_step)
        rate_limited = bool(np.any(limited_delta != delta))
        command = np.clip(self._last + limited_delta, self.lower, self.upper)
        self._last = command
        self.stats.commands += 1
        self.stats.clipped += int(clipped)
        self.stats.rate_limited += int(rate_limited)
        return SafetyResult(command.copy(), clipped=clipped, rate_limited=rate_limited)

    def filter_sequence(
        self, actions: np.ndarray, start: np.ndarray | None = None, steps_per_point: float = 1.0
    ) -> np.ndarray | None:
        """Safe version of a trajectory [n, num_joints] whose points are ``steps_per_point`` control
        ticks apart, starting from ``start`` (default: the last command). Does not change the filter's
        state. Non-finite points repeat the previous safe point. None when there is no start."""
        prev = self._valid(start) if start is not None else self._last
        if prev is None:
            return None
        arr = np.asarray(actions, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.num_joints:
            return None
        step = self.max_step * max(steps_per_point, 0.0)
        out = np.empty_like(arr)
        for i, target in enumerate(arr):
            if not np.all(np.isfinite(target)):
                out[i] = prev
                continue
            goal = np.clip(target, self.lower, self.upper)
            prev = np.clip(prev + np.clip(goal - prev, -step, step), self.lower, self.upper)
            out[i] = prev
        return out

    def within_limits(
        self, command: np.ndarray, previous: np.ndarray | None = None, tol: float = 1e-9
    ) -> bool:
        """Whether ``command`` respects the limits (and the max step from ``previous``)."""
        arr = np.asarray(command, dtype=np.float64).ravel()
        if arr.shape != (self.num_joints,) or not np.all(np.isfinite(arr)):
            return False
        if np.any(arr < self.lower - tol) or np.any(arr > self.upper + tol):
            return False
        if previous is not None:
            return bool(np.all(np.abs(arr - np.asarray(previous, dtype=np.float64)) <= self.max_step + tol))
        return True
