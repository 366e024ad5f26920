"""Last gate before the robot: position limits, velocity and acceleration limits in physical units,
NaN/inf rejection, and holds at where the robot is.

ROS-free; works in joint space (the listed joints, state-vector order, see ``joint_groups``); times are
seconds on the runtime's clock.

Limits are physical (rad/s, rad/s^2; m/s for prismatic joints), never "per control tick", so no control
rate can loosen them:
- forward output: a command may move at most ``max_velocity * dt`` from the previous one, where ``dt`` is
  the time since the previous command, capped at the nominal control period (a late tick never earns a
  larger step);
- trajectory output: every point at most ``max_velocity`` times its time spacing from the one before,
  the first against the robot's measured position (or, without a fresh measurement, the position the
  controller is commanded to at that moment);
- with ``max_acceleration`` (per joint, 0 = not limited) the velocity changes by at most
  ``max_acceleration * dt`` per step, starting from the velocity of what was commanded before, and
  slows down early enough to stop at the target.

The filter remembers what it last commanded (a forward command, or a whole trajectory with its start
time), so ``setpoint(now)`` is what the controllers track at ``now``; holds go there or to the measured
position, never to an internal value the robot was not sent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_policy.strict_config import require

OUTPUT_MODES: tuple[str, ...] = ("trajectory", "forward")
# commands kept: in trajectory mode one per chunk or hold, so seconds of them, longer than any fresh
# measurement's age (forward mode keeps one per tick and only ever uses the newest)
HISTORY = 64


def _as_tuple(value: object) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),)
    return tuple(float(v) for v in value)  # type: ignore[union-attr]


@dataclass(frozen=True)
class SafetyFilterConfig:
    """Per-joint limits (a single value applies to every joint)."""

    position_lower: tuple[float, ...] = (-math.pi,)
    position_upper: tuple[float, ...] = (math.pi,)
    max_velocity: tuple[float, ...] = (2.5,)  # rad/s (m/s)
    max_acceleration: tuple[float, ...] = (0.0,)  # rad/s^2 (m/s^2); 0 = not limited

    def __post_init__(self) -> None:
        for name in ("position_lower", "position_upper", "max_velocity", "max_acceleration"):
            try:
                object.__setattr__(self, name, _as_tuple(getattr(self, name)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"SafetyFilterConfig.{name}: expected numbers ({exc})") from exc
            values = getattr(self, name)
            require(len(values) > 0, f"SafetyFilterConfig.{name}: empty")
            require(
                all(math.isfinite(v) for v in values), f"SafetyFilterConfig.{name}: values must be finite"
            )
        require(
            all(v > 0 for v in self.max_velocity), "SafetyFilterConfig.max_velocity: values must be > 0"
        )
        require(
            all(v >= 0 for v in self.max_acceleration),
            "SafetyFilterConfig.max_acceleration: values must be >= 0 (0 = not limited)",
        )
        if len(self.position_lower) == len(self.position_upper) or 1 in (
            len(self.position_lower),
            len(self.position_upper),
        ):
            lower, upper = np.broadcast_arrays(
                np.asarray(self.position_lower), np.asarray(self.position_upper)
            )
            bad = np.nonzero(lower >= upper)[0]
            require(
                bad.size == 0,
                f"SafetyFilterConfig: position_lower >= position_upper for joints {bad.tolist()}",
            )

    def arrays(self, num_joints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, max_velocity, max_acceleration) broadcast to ``num_joints``; ConfigError on a
        length mismatch. Acceleration: ``inf`` where not limited."""
        out = []
        for name in ("position_lower", "position_upper", "max_velocity", "max_acceleration"):
            values = getattr(self, name)
            require(
                len(values) in (1, num_joints),
                f"SafetyFilterConfig.{name}: {len(values)} values for {num_joints} joints (give 1 or "
                f"{num_joints})",
            )
            out.append(np.broadcast_to(np.asarray(values, dtype=np.float64), (num_joints,)).copy())
        lower, upper, vmax, amax = out
        bad = np.nonzero(lower >= upper)[0]
        require(
            bad.size == 0, f"SafetyFilterConfig: position_lower >= position_upper for joints {bad.tolist()}"
        )
        amax[amax == 0] = np.inf
        return lower, upper, vmax, amax


@dataclass
class SafetyResult:
    command: np.ndarray | None  # None: nothing can be commanded (never activated, no measurement)
    held: bool = False  # the requested action was refused and the last safe command repeated
    clipped: bool = False  # a position limit was applied
    rate_limited: bool = False  # the velocity (or acceleration) limit was applied
    reason: str = ""


@dataclass(frozen=True)
class Trajectory:
    """Joint positions [n, J] at ``time_from_start`` [n] seconds after ``stamp`` (strictly increasing)."""

    positions: np.ndarray
    time_from_start: np.ndarray
    stamp: float
    hold: bool = False  # a hold: one point where the robot is

    def __post_init__(self) -> None:
        require(self.positions.ndim == 2, "Trajectory.positions must be [n, J]")
        require(self.positions.shape[0] == self.time_from_start.shape[0], "Trajectory: one time per point")


@dataclass
class SafetyStats:
    commands: int = 0
    trajectories: int = 0
    holds: int = 0
    held: int = 0
    clipped: int = 0
    rate_limited: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Commanded:
    """What the controllers were last sent: a trajectory from ``start`` at ``stamp`` (forward commands
    are one-point trajectories reached at once)."""

    stamp: float
    start: np.ndarray  # [J] the position the trajectory starts from
    times: np.ndarray  # [n] seconds after stamp, increasing (0 for a forward command)
    positions: np.ndarray  # [n, J]

    def at(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(position [J], velocity [J]) commanded at ``now``: linear between points, still after the end."""
        t = now - self.stamp
        times = np.concatenate([[0.0], self.times])
        points = np.concatenate([self.start[None], self.positions])
        if t >= times[-1] or times[-1] <= 0:
            return points[-1].copy(), np.zeros_like(self.start)
        if t <= 0:
            return points[0].copy(), np.zeros_like(self.start)
        i = int(np.searchsorted(times, t, side="right")) - 1
        span = times[i + 1] - times[i]
        frac = (t - times[i]) / span
        velocity = (points[i + 1] - points[i]) / span
        return points[i] + frac * (points[i + 1] - points[i]), velocity


class SafetyFilter:
    """Enforces the limits on every command; ``mode`` is the node's output mode."""

    def __init__(
        self, config: SafetyFilterConfig, num_joints: int, control_period: float, mode: str = "forward"
    ) -> None:
        require(control_period > 0, f"SafetyFilter: control_period must be > 0, got {control_period}")
        require(mode in OUTPUT_MODES, f"SafetyFilter: mode must be one of {OUTPUT_MODES}, got {mode!r}")
        self.num_joints = num_joints
        self.control_period = float(control_period)
        self.mode = mode
        self.set_limits(config)
        # what was commanded, newest last: a measurement taken under an older trajectory is compared with
        # the setpoint of that trajectory
        self._history: deque[_Commanded] = deque(maxlen=HISTORY)
        self._velocity = np.zeros(num_joints)  # of the last forward command
        self.stats = SafetyStats()

    def set_limits(self, config: SafetyFilterConfig) -> None:
        """New limits, effective from the next command (``ConfigError`` when they do not fit)."""
        arrays = config.arrays(self.num_joints)
        self.config = config
        self.lower, self.upper, self.max_velocity, self.max_acceleration = arrays

    # --- state -----------------------------------------------------------------------------------
    @property
    def _commanded(self) -> _Commanded | None:
        """The newest command (a trajectory, or a forward command as a one-point one)."""
        return self._history[-1] if self._history else None

    def _command_at(self, t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(position, velocity) commanded at time ``t``, by the command that was in force then."""
        for commanded in reversed(self._history):
            if commanded.stamp <= t:
                return commanded.at(t)
        return self._history[0].at(t) if self._history else None

    @property
    def active(self) -> bool:
        return self._commanded is not None

    @property
    def last_command(self) -> np.ndarray | None:
        """The last forward command (or the last point of the last trajectory)."""
        return None if self._commanded is None else self._commanded.positions[-1].copy()

    def setpoint(self, now: float) -> np.ndarray | None:
        """Where the controllers are commanded to be at ``now`` (None before the first command)."""
        return None if self._commanded is None else self._commanded.at(now)[0]

    def shift_time(self, delta: float) -> None:
        """The clock jumped by ``delta`` seconds: what was commanded stays where it was in time, so
        ``setpoint`` after the jump is the setpoint from before it."""
        for commanded in self._history:
            commanded.stamp += delta

    def reset(self) -> None:
        """Forget what was commanded: the next command ramps from the measured position again."""
        self._history.clear()
        self._velocity = np.zeros(self.num_joints)

    def _valid(self, values: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        if values is None:
            return None
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.shape != (self.num_joints,) or not np.all(np.isfinite(arr)):
            return None
        return arr

    def _note(self, reason: str) -> None:
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1

    def estimate(
        self, now: float, measured: np.ndarray | None, measured_at: float | None = None
    ) -> np.ndarray | None:
        """Where the robot is at ``now``: the measured position plus the commanded motion since it was
        measured (a measurement is never quite current while a trajectory executes); the commanded
        setpoint without a measurement; None when neither exists."""
        current = self._command_at(now)
        if current is None:
            return None if measured is None else measured.copy()
        if measured is None:
            return current[0]
        then = self._command_at(now if measured_at is None else measured_at)
        assert then is not None
        return measured + current[0] - then[0]

    def _start(
        self, now: float, measured: np.ndarray | None, measured_at: float | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(position, velocity) a new trajectory starts from (``estimate``, with the commanded velocity)."""
        position = self.estimate(now, measured, measured_at)
        if position is None:
            return None
        velocity = np.zeros(self.num_joints) if self._commanded is None else self._commanded.at(now)[1]
        return position, velocity

    # --- the limit itself ------------------------------------------------------------------------
    def _limit(
        self, prev: np.ndarray, velocity: np.ndarray, target: np.ndarray, dt: float
    ) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """One step of ``dt`` seconds from ``prev`` (moving at ``velocity``) toward ``target``:
        (position, velocity, clipped, rate_limited)."""
        goal = np.clip(target, self.lower, self.upper)
        clipped = bool(np.any(goal != target))
        if dt <= 0:
            return prev.copy(), velocity.copy(), clipped, bool(np.any(goal != prev))
        distance = goal - prev
        wanted = distance / dt
        # the fastest speed from which the joint can still stop at the goal in steps of dt, braking at
        # the acceleration limit: v^2 / (2a) + v dt <= |distance| (a step of margin for discrete time)
        limited = np.isfinite(self.max_acceleration)
        a = np.where(limited, self.max_acceleration, 1.0)
        stop = a * (np.sqrt(dt * dt + 2.0 * np.abs(distance) / a) - dt)
        cap = np.minimum(self.max_velocity, np.where(limited, stop, np.inf))
        v = np.clip(wanted, -cap, cap)
        v = np.clip(v, velocity - self.max_acceleration * dt, velocity + self.max_acceleration * dt)
        v = np.clip(v, -self.max_velocity, self.max_velocity)
        position = np.clip(prev + v * dt, self.lower, self.upper)
        rate_limited = bool(np.any(np.abs(v - wanted) > 1e-12))
        return position, (position - prev) / dt, clipped, rate_limited

    # --- forward output --------------------------------------------------------------------------
    def command(
        self, action: np.ndarray | Sequence[float], now: float, measured: np.ndarray | None = None
    ) -> SafetyResult:
        """The safe forward command at ``now`` toward ``action`` [num_joints]. Before the first command
        it starts from ``measured`` (one period of motion at most)."""
        meas = self._valid(measured)
        if self._commanded is None:
            if meas is None:
                self.stats.held += 1
                self._note("no valid measured position to start from")
                return SafetyResult(None, held=True, reason="no valid measured position to start from")
            prev, velocity, dt = np.clip(meas, self.lower, self.upper), np.zeros(self.num_joints), None
        else:
            prev, velocity = self._commanded.positions[-1], self._velocity
            dt = now - self._commanded.stamp
        target = np.asarray(action, dtype=np.float64).ravel()
        reason = ""
        if target.shape != (self.num_joints,):
            reason = f"action has {target.size} values, expected {self.num_joints}"
        elif not np.all(np.isfinite(target)):
            reason = "non-finite action rejected"
        if reason:
            self.stats.held += 1
            self._note(reason.split(",")[0] if "values" not in reason else "wrong action size")
            if self._commanded is None:
                self._record_command(prev, now)
            return SafetyResult(prev.copy(), held=True, reason=reason)
        step_dt = self.control_period if dt is None else min(max(dt, 0.0), self.control_period)
        position, velocity, clipped, limited = self._limit(prev, velocity, target, step_dt)
        self._record_command(position, now, velocity)
        self.stats.commands += 1
        self.stats.clipped += int(clipped)
        self.stats.rate_limited += int(limited)
        return SafetyResult(position.copy(), clipped=clipped, rate_limited=limited)

    def _record_command(self, position: np.ndarray, now: float, velocity: np.ndarray | None = None) -> None:
        self._history.append(_Commanded(now, position.copy(), np.zeros(1), position[None].copy()))
        self._velocity = np.zeros(self.num_joints) if velocity is None else velocity

    # --- trajectory output -----------------------------------------------------------------------
    def trajectory(
        self,
        actions: np.ndarray,
        time_from_start: np.ndarray,
        now: float,
        measured: np.ndarray | None = None,
        measured_at: float | None = None,
    ) -> Trajectory | None:
        """The safe version of a trajectory: ``actions`` [n, num_joints] at ``time_from_start`` [n]
        seconds after ``now`` (increasing, > 0), starting from where the robot is (``estimate`` from the
        position measured at ``measured_at``). Non-finite points repeat the previous safe point. None
        when there is nowhere to start from or nothing to send."""
        arr = np.asarray(actions, dtype=np.float64)
        times = np.asarray(time_from_start, dtype=np.float64).ravel()
        if arr.ndim != 2 or arr.shape[1] != self.num_joints or arr.shape[0] != times.size or not times.size:
            return None
        if not (np.all(np.isfinite(times)) and times[0] > 0 and np.all(np.diff(times) > 0)):
            return None
        meas = self._valid(measured)
        start = self._start(now, meas, measured_at)
        if start is None:
            self.stats.held += 1
            self._note("no valid measured position to start from")
            return None
        position, velocity = np.clip(start[0], self.lower, self.upper), start[1]
        first = position.copy()
        out = np.empty_like(arr)
        prev_t = 0.0
        clipped = limited = False
        for i, (target, t) in enumerate(zip(arr, times, strict=True)):
            if np.all(np.isfinite(target)):
                position, velocity, c, r = self._limit(position, velocity, target, t - prev_t)
                clipped, limited = clipped or c, limited or r
            else:
                velocity = np.zeros(self.num_joints)
                self._note("non-finite trajectory point")
            out[i] = position
            prev_t = t
        times = times + self._extra_time(out[0], times[0], meas)
        self._history.append(_Commanded(now, first, times.copy(), out.copy()))
        self.stats.trajectories += 1
        self.stats.clipped += int(clipped)
        self.stats.rate_limited += int(limited)
        return Trajectory(out, times.copy(), now)

    def _extra_time(self, first: np.ndarray, t_first: float, measured: np.ndarray | None) -> float:
        """Seconds to add before the first point so that it is reached within the velocity limit from the
        measured position too: the estimate assumes the robot tracked what was commanded since it was
        measured, and a robot that did not (blocked, lagging) is then never driven faster than allowed."""
        if measured is None:
            return 0.0
        need = float(np.max(np.abs(first - measured) / self.max_velocity))
        return max(0.0, need - t_first)

    # --- holds -----------------------------------------------------------------------------------
    def hold(
        self,
        now: float,
        measured: np.ndarray | Sequence[float] | None = None,
        measured_at: float | None = None,
        last_measured: np.ndarray | Sequence[float] | None = None,
    ) -> Trajectory | None:
        """Stop where the robot is, as a one-point trajectory reached within the velocity limit (at least
        one control period away). Trajectory mode: ``estimate`` (the measured position plus the commanded
        motion since, or the commanded setpoint). Forward mode: the last command repeated (the robot is
        there), else the measured position. None when there is neither. ``last_measured``: the newest
        measurement however old (``measured`` is only a fresh one); the hold is reached within the limit
        from it too."""
        meas = self._valid(measured)
        known = meas if meas is not None else self._valid(last_measured)
        if self.mode == "forward":
            target = self.last_command if self._commanded is not None else meas
        else:
            target = self.estimate(now, meas, measured_at)
        if target is None:
            return None
        reference = target
        target = np.clip(target, self.lower, self.upper)
        travel = float(np.max(np.abs(target - reference) / self.max_velocity))
        t = max(self.control_period, travel)
        t += self._extra_time(target, t, known)
        if self.mode == "forward":
            self._record_command(target, now)
        else:
            self._history.append(_Commanded(now, reference.copy(), np.array([t]), target[None].copy()))
        self.stats.holds += 1
        return Trajectory(target[None].copy(), np.array([t]), now, hold=True)
