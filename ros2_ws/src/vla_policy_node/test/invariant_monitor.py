"""An independent invariant monitor for the node's outputs: every command topic, ``~/action_chunk`` and
``~/status``. Used by the node tests (through ``node_harness.Harness``), the reliability scenarios and the
soak script (``scripts/soak.sh``).

Invariants checked on every message, in physical units (as the node's ``SafetyFilter`` defines them):
- forward commands (``<group>_controller/commands``): the group's size, finite, within the position limits,
  at most ``max_velocity * control_period`` from the previous command of the group unless within that of
  the measured position (a ramp from the measured position after (re)activation); and over any stretch of
  at least ``window`` seconds of arrival time, no faster than ``max_velocity`` (with ``slack`` seconds for
  delivery jitter), so no control rate can loosen the bound;
- trajectories (``<group>_controller/joint_trajectory``): the group's joint names, every point finite and
  within the limits, ``time_from_start`` increasing, consecutive points at most ``max_velocity`` times
  their time spacing apart, and the first point (a hold's only point) within ``max_velocity`` times its
  time (plus ``max_velocity * slack`` for delivery) of the position measured now or of one the robot
  reported within the last ``measurement_window`` seconds (the node can only know a measurement it has
  received, and it refuses older ones);
- action chunks: the group's joint names and finite values (raw model output: limits are not applied);
- no command while the node is inactive or holding (status not RUNNING), except the hold command itself:
  a forward command that repeats the previous one (or equals the measured position), or a one-point
  trajectory. A status race is tolerated: a non-hold command counts only when the statuses sent before
  and after it both say not RUNNING.

Messages are ordered by the time the node sent them (the DDS source timestamp), not by when this
monitor's executor took them: a starved executor takes one message per ready subscription per wake-up,
so a backlog of statuses runs ahead of the three command topics' backlog, and arrival order would pair
commands sent while RUNNING with a later HOLDING status. Speeds are measured in send time for the same
reason (a backlog taken in a burst would look like a fast move).
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vla_policy.stamps import to_seconds

RUNNING = 2
STATE_NAMES = {0: "UNCONFIGURED", 1: "READY", 2: "RUNNING", 3: "HOLDING", 4: "FAULT"}
MAX_KEPT = 200  # violation texts kept (all are counted)
QUEUE = 1000  # subscription depth: a stalled monitor must not drop commands (a gap would look like a jump)
STATUS_LOG = 1000  # statuses kept to judge commands by the status in effect when they were sent


def sent_at(info: Mapping[str, Any]) -> float:
    """The time (s, system clock) the publisher wrote a message, from rclpy's ``MessageInfo``."""
    ns = int(info.get("source_timestamp") or 0)
    return ns * 1e-9 if ns > 0 else time.time()


class InvariantMonitor:
    def __init__(
        self,
        node: Any,
        group_joints: Mapping[str, Sequence[str]],
        *,
        lower: float,
        upper: float,
        max_velocity: float,
        control_period: float,
        window: float = 0.5,
        slack: float = 0.1,
        node_name: str = "vla_policy_node",
        measured: Callable[[str], Sequence[float] | None] | None = None,
        reported: Callable[[str], list[Sequence[float]]] | None = None,
        on_command: Callable[[str, list[float]], None] | None = None,
        on_trajectory: Callable[[str, Any], None] | None = None,
        lock: Any = None,
        tol: float = 1e-6,
        keep_history: int = 100_000,
    ) -> None:
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory
        from vla_msgs.msg import ActionChunk, PolicyStatus

        self.group_joints = {g: tuple(j) for g, j in group_joints.items()}
        self.lower, self.upper, self.max_velocity = lower, upper, max_velocity
        self.control_period = control_period
        self.window, self.slack = window, slack
        self.measured = measured
        self.reported = reported
        self.on_command = on_command
        self.on_trajectory = on_trajectory
        self.tol = tol
        self.keep_history = keep_history
        self.lock = lock if lock is not None else threading.RLock()
        self.commands: dict[str, list[tuple[float, list[float]]]] = {g: [] for g in self.group_joints}
        self.trajectories: dict[str, list[Any]] = {g: [] for g in self.group_joints}
        self.trajectory_times: dict[str, list[float]] = {g: [] for g in self.group_joints}  # monotonic
        self.chunks: list[Any] = []
        self.statuses: list[Any] = []
        self.counts: dict[str, int] = {}
        self.violations: list[str] = []
        self.violation_count = 0
        self._last_cmd: dict[str, list[float]] = {}
        # (sent, state, stalled) in send order; non-hold commands wait here for the status after them
        self._status_log: list[tuple[float, int, bool]] = []
        self._pending: list[tuple[float, str]] = []
        self._last_kind: dict[str, str] = {}  # group -> "hold" | "move" (the last command's kind)
        for group in self.group_joints:
            node.create_subscription(
                Float64MultiArray,
                f"/{group}_controller/commands",
                functools.partial(self._on_command, group),
                QUEUE,
            )
            node.create_subscription(
                JointTrajectory,
                f"/{group}_controller/joint_trajectory",
                functools.partial(self._on_trajectory, group),
                QUEUE,
            )
        node.create_subscription(ActionChunk, f"/{node_name}/action_chunk", self._on_chunk, 10)
        node.create_subscription(PolicyStatus, f"/{node_name}/status", self._on_status, QUEUE)

    # --- bookkeeping -----------------------------------------------------------------------------
    @property
    def messages_checked(self) -> int:
        with self.lock:
            return sum(self.counts.values())

    def _violation(self, text: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT:
            self.violations.append(text)

    def _count(self, topic: str) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _values_ok(self, what: str, values: Sequence[float], expected_len: int) -> bool:
        ok = True
        if len(values) != expected_len:
            self._violation(f"{what}: {len(values)} values, expected {expected_len}")
            ok = False
        for v in values:
            if not math.isfinite(v):
                self._violation(f"{what}: non-finite value {v}")
                ok = False
            elif v < self.lower - self.tol or v > self.upper + self.tol:
                self._violation(f"{what}: value {v} outside [{self.lower}, {self.upper}]")
                ok = False
        return ok

    def _measured(self, group: str) -> list[float] | None:
        if self.measured is None:
            return None
        m = self.measured(group)
        return None if m is None else [float(v) for v in m]

    @staticmethod
    def _dist(a: Sequence[float], b: Sequence[float]) -> float:
        return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)

    def _note_command(self, what: str, is_hold: bool, sent: float) -> None:
        if is_hold:
            return
        self._pending.append((sent, what))
        self._judge_pending()

    def _judge_pending(self) -> None:
        """Judge each non-hold command once a status sent after it has arrived: a violation when the
        status in effect when it was sent and the next one both say not RUNNING. (A control loop reported
        stalled by the watchdog commands again as soon as it ticks: not a hold.)"""
        log = self._status_log
        if not log:
            self._pending.clear()  # nothing said yet: the node's state is unknown, not "holding"
            return
        keep = []
        for sent, what in self._pending:
            i = bisect.bisect_right(log, sent, key=lambda e: e[0])
            if i == len(log):
                keep.append((sent, what))  # the status after it is not here yet
                continue
            if i == 0:
                continue  # sent before the oldest status kept
            _, state, stalled = log[i - 1]
            if state != RUNNING and not stalled and log[i][1] != RUNNING:
                self._violation(f"non-hold {what} while {STATE_NAMES.get(state, state)}")
        self._pending = keep

    # --- callbacks -------------------------------------------------------------------------------
    def _on_command(self, group: str, msg: Any, info: Mapping[str, Any]) -> None:
        now = sent_at(info)
        values = [float(v) for v in msg.data]
        with self.lock:
            self._count(f"{group}/commands")
            what = f"{group} command"
            ok = self._values_ok(what, values, len(self.group_joints[group]))
            prev = self._last_cmd.get(group)
            measured = self._measured(group)
            is_hold = False
            if ok:
                step_prev = (
                    self._dist(values, prev) if prev is not None and len(prev) == len(values) else None
                )
                step_meas = (
                    self._dist(values, measured)
                    if measured is not None and len(measured) == len(values)
                    else None
                )
                is_hold = (step_prev is not None and step_prev <= self.tol) or (
                    step_meas is not None and step_meas <= self.tol
                )
                limit = self.max_velocity * self.control_period + self.tol
                if step_prev is not None and step_prev > limit and (step_meas is None or step_meas > limit):
                    self._violation(f"{what}: step {step_prev:.4f} > {limit:.4f} in one control period")
                self._check_speed(group, what, now, values)
            self._note_command(what, is_hold, now)
            self._last_cmd[group] = values
            hist = self.commands[group]
            hist.append((now, values))
            if len(hist) > self.keep_history:
                del hist[: len(hist) // 2]
        if self.on_command is not None:
            self.on_command(group, values)

    def _check_speed(self, group: str, what: str, now: float, values: list[float]) -> None:
        """No faster than max_velocity over any stretch of at least ``window`` seconds of send time."""
        hist = self.commands[group]
        for t_old, old in reversed(hist):
            span = now - t_old
            if span < self.window:
                continue
            if span > 4 * self.window:
                break
            moved = self._dist(values, old) if len(old) == len(values) else 0.0
            allow = self.max_velocity * (span + self.slack) + self.tol
            if moved > allow:
                self._violation(f"{what}: moved {moved:.4f} in {span:.3f} s (> {allow:.4f} at max velocity)")
            break

    def _on_trajectory(self, group: str, msg: Any, info: Mapping[str, Any]) -> None:
        with self.lock:
            self._count(f"{group}/joint_trajectory")
            what = f"{group} trajectory"
            names = list(msg.joint_names)
            if names != list(self.group_joints[group]):
                self._violation(f"{what}: joint names {names}, expected {list(self.group_joints[group])}")
            if not msg.points:
                self._violation(f"{what}: no points")
            prev_t, prev_p = 0.0, None
            measured = self._measured(group)
            for i, p in enumerate(msg.points):
                pos = [float(v) for v in p.positions]
                ok = self._values_ok(f"{what} point {i}", pos, len(self.group_joints[group]))
                t = to_seconds(p.time_from_start)
                if (i > 0 and t <= prev_t) or (i == 0 and t <= 0):
                    self._violation(f"{what}: time_from_start not increasing at point {i}")
                allow = self.max_velocity * (t - prev_t) + self.tol
                if not ok:
                    prev_p = None
                elif prev_p is not None and len(prev_p) == len(pos):
                    step = self._dist(pos, prev_p)
                    if step > allow:
                        self._violation(
                            f"{what}: step {step:.4f} > {allow:.4f} between points {i - 1} and {i}"
                        )
                elif i == 0 and measured is not None and len(measured) == len(pos):
                    slack = allow + self.max_velocity * self.slack
                    known = [measured, *(self.reported(group) if self.reported is not None else [])]
                    step = min(self._dist(pos, m) for m in known if len(m) == len(pos))
                    if step > slack:
                        kind = "hold" if len(msg.points) == 1 else "first point"
                        self._violation(
                            f"{what}: {kind} {step:.4f} from the measured position (> {slack:.4f})"
                        )
                prev_t, prev_p = t, (pos if ok else None)
            self._note_command(what, len(msg.points) == 1, sent_at(info))
            self.trajectories[group].append(msg)
            self.trajectory_times[group].append(time.monotonic())
            if len(self.trajectories[group]) > self.keep_history:
                del self.trajectories[group][: self.keep_history // 2]
                del self.trajectory_times[group][: self.keep_history // 2]
        if self.on_trajectory is not None:
            self.on_trajectory(group, msg)

    def _on_chunk(self, msg: Any) -> None:
        with self.lock:
            self._count("action_chunk")
            for group, joints in self.group_joints.items():
                traj = getattr(msg, group, None)
                if traj is None:
                    continue
                if list(traj.joint_names) != list(joints):
                    self._violation(f"action_chunk {group}: joint names {list(traj.joint_names)}")
                for p in traj.points:
                    if not all(math.isfinite(v) for v in p.positions):
                        self._violation(f"action_chunk {group}: non-finite action")
                        break
            self.chunks.append(msg)
            if len(self.chunks) > self.keep_history:
                del self.chunks[: self.keep_history // 2]

    def _on_status(self, msg: Any, info: Mapping[str, Any]) -> None:
        with self.lock:
            self._count("status")
            state = int(msg.state)
            stalled = state != RUNNING and str(msg.reason).startswith("control loop stalled")
            self._status_log.append((sent_at(info), state, stalled))
            if len(self._status_log) > STATUS_LOG:
                del self._status_log[: STATUS_LOG // 2]
            self._judge_pending()
            self.statuses.append(msg)
            if len(self.statuses) > self.keep_history:
                del self.statuses[: self.keep_history // 2]

    # --- queries ---------------------------------------------------------------------------------
    def last_command_is_hold(self, group: str, measured: Sequence[float] | None = None) -> tuple[bool, str]:
        """Whether the group's last command holds the robot: a one-point trajectory at the measured
        position (trajectory mode) or a forward command equal to the one before it or to the measured
        position (forward mode)."""
        with self.lock:
            trajs, cmds = self.trajectories[group], self.commands[group]
            if trajs:
                last = trajs[-1]
                if len(last.points) != 1:
                    return False, f"last {group} trajectory has {len(last.points)} points"
                if measured is not None:
                    d = self._dist(list(last.points[0].positions), list(measured))
                    allow = self.max_velocity * (self.control_period + self.slack) + self.tol
                    if d > allow:
                        return False, f"last {group} trajectory is {d:.4f} from the measured position"
                return True, "one-point trajectory"
            if cmds:
                last_v = cmds[-1][1]
                if len(cmds) >= 2 and self._dist(last_v, cmds[-2][1]) <= self.tol:
                    return True, "repeated command"
                near = self.max_velocity * self.control_period + self.tol
                if measured is not None and self._dist(last_v, list(measured)) <= near:
                    return True, "at the measured position"
                return False, f"last {group} command moves"
            return False, f"no {group} command"

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "messages_checked": sum(self.counts.values()),
                "violations": self.violation_count,
                "per_topic": dict(sorted(self.counts.items())),
                "violation_examples": list(self.violations[:10]),
            }
