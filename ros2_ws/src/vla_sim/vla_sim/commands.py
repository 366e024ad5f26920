"""Controller-command arbitration for the sim (ROS-free): validates what the policy sends, keeps the target.

Behaves like ros2_control: per group, a JointTrajectory (points relative to its header stamp, or to its
arrival when the stamp is zero; linear interpolation from the target at arrival to the first point) or a
forward command (positions of the group's joints in config order). Bad input never reaches the physics: a
message with NaN/inf, values out of range, wrong joint names or a wrong length is rejected and the group
holds its last target; silence longer than ``command_timeout`` holds too. Every hold is reported in
``status()`` and in ``events`` (for the log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class _Trajectory:
    idx: np.ndarray  # ALOHA indices, in the message's joint order
    start: float
    times: np.ndarray  # absolute sim times of the points
    points: np.ndarray  # [n, len(idx)]
    origin: np.ndarray  # target at arrival

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def sample(self, t: float) -> np.ndarray:
        if t >= self.times[-1]:
            return self.points[-1]
        times = np.concatenate([[self.start], self.times])
        pts = np.vstack([self.origin[None, :], self.points])
        k = int(np.searchsorted(times, t, side="right"))
        if k <= 0:
            return pts[0]
        t0, t1 = times[k - 1], times[k]
        f = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return pts[k - 1] + (pts[k] - pts[k - 1]) * f


class CommandArbiter:
    def __init__(
        self,
        joint_names: Sequence[str],
        lower: np.ndarray,
        upper: np.ndarray,
        groups: Mapping[str, Sequence[str]],
        command_timeout: float = 1.0,
        range_margin: float = 0.05,
    ) -> None:
        self.joint_names = list(joint_names)
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        unknown = [n for g in groups.values() for n in g if n not in self._index]
        if unknown:
            raise ValueError(f"group joints {unknown} are not sim joints {self.joint_names}")
        self.groups = {g: np.array([self._index[n] for n in names]) for g, names in groups.items()}
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.command_timeout = float(command_timeout)
        self.range_margin = float(range_margin)
        self.target = np.zeros(len(self.joint_names))
        self._traj: dict[str, _Trajectory] = {}
        self.last_command_time: float | None = None
        self.seq = 0  # messages handled (accepted or rejected)
        self.accepted = 0
        self.rejected = 0
        self.last_error = ""
        self.last_error_time: float | None = None
        self.events: list[str] = []
        self._silent = False

    def reset(self, qpos: np.ndarray, now: float) -> None:
        self.target = np.asarray(qpos, dtype=np.float64).copy()
        self._traj.clear()
        self.last_command_time = None
        self._silent = False
        self.last_error = ""
        self.last_error_time = None
        self._reset_time = now

    # --- validation ---------------------------------------------------------------------------------
    def _reject(self, group: str, why: str, now: float) -> bool:
        self.seq += 1
        self.rejected += 1
        self.last_error = f"{group}: {why}; holding"
        self.last_error_time = now
        self.events.append(f"rejected command: {self.last_error}")
        return False

    def _check_values(self, idx: np.ndarray, values: np.ndarray) -> str | None:
        if not np.all(np.isfinite(values)):
            return "NaN or inf in the command"
        lo = self.lower[idx] - self.range_margin
        hi = self.upper[idx] + self.range_margin
        flat = values.reshape(-1, len(idx))
        bad = np.argwhere((flat < lo) | (flat > hi))
        if bad.size:
            r, j = (int(x) for x in bad[0])
            name = self.joint_names[idx[j]]
            return (
                f"{name}={flat[r, j]:.3g} out of range [{self.lower[idx[j]]:.3g}, {self.upper[idx[j]]:.3g}]"
            )
        return None

    def _accept(self, now: float) -> bool:
        self.seq += 1
        self.accepted += 1
        self.last_command_time = now
        if self._silent:
            self.events.append("commands resumed")
        self._silent = False
        return True

    # --- inputs -------------------------------------------------------------------------------------
    def on_forward(self, group: str, values: Sequence[float], now: float) -> bool:
        if group not in self.groups:
            return self._reject(group, "unknown group", now)
        idx = self.groups[group]
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.shape != idx.shape:
            return self._reject(group, f"expected {idx.size} values, got {v.size}", now)
        why = self._check_values(idx, v)
        if why:
            return self._reject(group, why, now)
        self._traj.pop(group, None)
        self.target[idx] = np.clip(v, self.lower[idx], self.upper[idx])
        return self._accept(now)

    def on_trajectory(
        self,
        group: str,
        joint_names: Sequence[str],
        times_from_start: Sequence[float],
        positions: Sequence[Sequence[float]],
        stamp: float,
        now: float,
    ) -> bool:
        if group not in self.groups:
            return self._reject(group, "unknown group", now)
        names = list(joint_names)
        expected = [self.joint_names[i] for i in self.groups[group]]
        if sorted(names) != sorted(expected):
            return self._reject(group, f"joint names {names} do not match {expected}", now)
        if len(positions) == 0:
            return self._reject(group, "trajectory has no points", now)
        idx = np.array([self._index[n] for n in names])
        try:
            pts = np.asarray(positions, dtype=np.float64).reshape(len(positions), len(names))
        except ValueError:
            return self._reject(group, "a point's length differs from the joint names", now)
        times = np.asarray(times_from_start, dtype=np.float64)
        if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0) or np.any(times < 0):
            return self._reject(group, "time_from_start must be finite and non-decreasing", now)
        why = self._check_values(idx, pts)
        if why:
            return self._reject(group, why, now)
        start = stamp if stamp > 0 else now
        self._traj[group] = _Trajectory(
            idx=idx,
            start=now,
            times=start + times,
            points=np.clip(pts, self.lower[idx], self.upper[idx]),
            origin=self.target[idx].copy(),
        )
        return self._accept(now)

    # --- outputs ------------------------------------------------------------------------------------
    def covered_until(self) -> float | None:
        """Sim time until which every active trajectory has points (None: no trajectory)."""
        if not self._traj:
            return None
        return min(tr.end for tr in self._traj.values())

    def command(self, now: float) -> np.ndarray:
        """The 14-D target at sim time ``now`` (also updates the silence state)."""
        for tr in self._traj.values():
            self.target[tr.idx] = tr.sample(now)
        since = (
            self.last_command_time
            if self.last_command_time is not None
            else getattr(self, "_reset_time", 0.0)
        )
        if now - since > self.command_timeout and not self._silent:
            self._silent = True
            self.events.append(f"no command for {now - since:.2f} s (sim time); holding")
        return self.target.copy()

    @property
    def holding(self) -> bool:
        return self._silent

    def status(self, now: float) -> dict:
        since = self.last_command_time if self.last_command_time is not None else None
        state = "hold_silence" if self._silent else "ok"
        if self.last_error_time is not None and now - self.last_error_time < 1.0:
            state = "hold_rejected" if state == "ok" else state
        return {
            "command_state": state,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "last_error": self.last_error,
            "seconds_since_command": None if since is None else round(now - since, 3),
        }

    def pop_events(self) -> list[str]:
        ev, self.events = self.events, []
        return ev
