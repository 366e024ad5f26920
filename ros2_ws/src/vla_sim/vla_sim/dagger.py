"""DAgger episodes (Ross et al. 2011): the policy drives the sim, the scripted expert labels what it visits.

The scripted expert's joint plan is a function of the seed's object pose (``plan_joint_trajectory``), and
its commands are absolute joint targets, so a label for a state the policy reached is a command of that
plan. Which one: the plan's time alone is a poor label for a policy that hesitates or runs ahead (the same
observation would be labelled "be further along" more and more, and the labels contradict each other), so
the label follows the plan's phase: ``tau`` advances one plan step per step while the arms keep up with the
plan, waits while they lag more than the expert's own tracking lag, and catches up at twice the pace when
they are ahead. In the plan's pauses (the hand-over, where only the grippers move) every step of the pause
matches the arms: the phase goes on at the plan's pace, so the grippers' commands keep their timing.

Each episode becomes an episode bag in the demonstrations' layout (``EpisodeRecorder``): the cameras and
joints the policy saw, the labels as the controllers' commands, so ``vla-policy train`` reads it like a
demonstration. The label holds while the object lies where the plan expects it. Recording ends when it does
not: the object moved more than ``max_object_shift`` metres before it was lifted (the policy pushed it), or
the plan's phase passed its lift time (``label_until_step``) without a lift.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_sim.aloha_env import AlohaSim, StepResult
from vla_sim.episode_recorder import GROUP_INDICES, EpisodeRecorder
from vla_sim.eval_metrics import LIFTED_REWARD
from vla_sim.inprocess_loop import InProcessLoop, LoopConfig
from vla_sim.scripted_expert import plan_joint_trajectory

# ALOHA indices of the arm joints (the grippers are what the labels command)
ARMS = np.array(GROUP_INDICES["left_arm"] + GROUP_INDICES["right_arm"])
TRACKING_LAG = 3  # plan steps the expert's own arms trail its commands (measured: 2-5 on transfer_cube)
MATCH_TOLERANCE = 0.01  # rad: plan steps this close to the best match count as matching
MATCH_WINDOW = (-10, 40)  # plan steps searched around the current phase


class _Labeller:
    """The recording hooks of one episode: the plan's command at the episode's phase, until the label
    breaks."""

    def __init__(
        self, sim: AlohaSim, rec: EpisodeRecorder, plan: np.ndarray, max_shift: float, until: int
    ) -> None:
        self.sim, self.rec, self.plan = sim, rec, plan
        self.max_shift, self.until = max_shift, until
        self.steps = 0
        self.tau = 0
        self.end = ""
        self.object0 = np.zeros(2)
        self.qpos = np.zeros(14)

    def on_reset(self, qpos: np.ndarray, images: dict[str, np.ndarray]) -> None:
        self.object0 = self.sim.object_state[:2].copy()
        self.qpos = np.asarray(qpos, dtype=np.float64)
        self.rec.reset(qpos, images)

    def phase(self, qpos: np.ndarray) -> int:
        """The plan step that labels the state ``qpos`` (14-D), given the phase so far."""
        lo = max(0, self.tau + MATCH_WINDOW[0])
        hi = min(len(self.plan), self.tau + MATCH_WINDOW[1])
        dist = np.linalg.norm(self.plan[lo:hi][:, ARMS] - qpos[ARMS], axis=1)
        near = lo + np.flatnonzero(dist <= dist.min() + MATCH_TOLERANCE)
        if near[0] + TRACKING_LAG > self.tau + 1:  # ahead even by the earliest match: catch up
            step = 2
        elif near[-1] + TRACKING_LAG >= self.tau + 1:  # on time, or in a pause of the plan
            step = 1
        else:  # lagging: wait for the arms
            step = 0
        return min(self.tau + step, len(self.plan) - 1)

    def on_step(self, k: int, target: np.ndarray, res: StepResult, images: dict[str, np.ndarray]) -> bool:
        self.tau = self.phase(self.qpos) if k else 0  # the state the step started from
        self.rec.step(k, self.plan[self.tau], res, images)
        self.qpos = np.asarray(res.qpos, dtype=np.float64)
        self.steps = k + 1
        lifted = self.sim.max_reward >= LIFTED_REWARD
        shift = float(np.linalg.norm(self.sim.object_state[:2] - self.object0))
        if not lifted and shift > self.max_shift:
            self.end = f"object pushed {shift:.3f} m at step {k + 1}"
        elif not lifted and self.tau >= self.until:
            self.end = f"not lifted by plan step {self.until} (step {k + 1})"
        return not self.end


def record_dagger(
    checkpoint: str | Path,
    seeds: Sequence[int],
    out: str | Path,
    cfg: LoopConfig,
    storage: str = "mcap",
    max_object_shift: float = 0.015,
    label_until_step: int = 230,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the policy of ``checkpoint`` on ``seeds`` and write one relabelled episode bag per seed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loop = InProcessLoop(checkpoint, cfg)
    t0 = time.perf_counter()
    rows = []
    try:
        for i, seed in enumerate(seeds):
            _, plan = plan_joint_trajectory(cfg.task, seed)
            name = f"dagger_{seed:06d}"
            source = {"vla_sim.source": "dagger"}
            rec = EpisodeRecorder(loop.sim, out, name, seed, loop.cameras, storage, source)
            lab = _Labeller(loop.sim, rec, plan, max_object_shift, label_until_step)
            try:
                ep = loop.run_episode(seed, on_step=lab.on_step, on_reset=lab.on_reset)
            except BaseException:
                rec.discard()
                raise
            rows.append(
                {
                    "seed": seed,
                    "bag": str(rec.finish(out / name, bool(ep["success"]))),
                    "labelled_steps": lab.steps,
                    "ended": lab.end or "time limit",
                    "policy_success": ep["success"],
                    "max_reward": ep["max_reward"],
                }
            )
            log(
                f"vla-sim dagger: {i + 1}/{len(seeds)} seed {seed}: {lab.steps} steps labelled, "
                f"{rows[-1]['ended']}, policy reward {ep['max_reward']:g}"
            )
    finally:
        loop.close()
    summary = {
        "checkpoint": str(checkpoint),
        "episodes": len(rows),
        "labelled_steps": int(sum(r["labelled_steps"] for r in rows)),
        "policy_successes": int(sum(r["policy_success"] for r in rows)),
        "wall_s": round(time.perf_counter() - t0, 2),
        "rows": rows,
    }
    (out / "dagger_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
