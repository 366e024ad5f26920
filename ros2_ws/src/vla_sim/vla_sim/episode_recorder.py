"""``EpisodeRecorder``: one simulated episode as an episode bag (``vla_policy.data.episode_bag`` format).

Per step k (sim time t_k = k * DT): the cameras and /joint_states observed at t_k, then the command applied
from t_k to t_{k+1} on ``<group>_controller/commands`` (Float64MultiArray, the group's joints in config
order), and /clock. /instruction is written once at t = 0. ``command`` is what the bag records as the
controllers' commands: the executed action in the scripted expert's demonstrations, the expert's label in
DAgger episodes (where the policy executed something else).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vla_sim.aloha_env import DT, INSTRUCTIONS, JOINT_NAMES, AlohaSim, StepResult

# ALOHA 14-D index -> group, in the node's group order (config/aloha.yaml)
GROUP_INDICES: dict[str, list[int]] = {
    "left_arm": [0, 1, 2, 3, 4, 5],
    "right_arm": [7, 8, 9, 10, 11, 12],
    "claw": [6, 13],
}


def split_groups(action14: np.ndarray) -> dict[str, np.ndarray]:
    a = np.asarray(action14, dtype=np.float64)
    return {g: a[idx] for g, idx in GROUP_INDICES.items()}


class EpisodeRecorder:
    """``reset(qpos, images)`` once, ``step(k, command, result, images)`` per step, then ``finish(path,
    success)`` (the bag moves into place) or ``discard()``. Writes to ``<out>/.tmp_<name>`` meanwhile."""

    def __init__(
        self,
        sim: AlohaSim,
        out: Path,
        name: str,
        seed: int,
        camera_map: Mapping[str, str],
        storage: str = "mcap",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        from vla_policy.data import episode_bag as eb
        from vla_policy.runtime.joint_groups import JointGroups

        self.sim, self.cams, self._eb = sim, dict(camera_map), eb
        self.tmp = Path(out) / f".tmp_{name}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.controllers = {g: f"{g}_controller" for g in GROUP_INDICES}
        joints = JointGroups(**{g: tuple(JOINT_NAMES[i] for i in idx) for g, idx in GROUP_INDICES.items()})
        meta = eb.EpisodeMetadata(
            task=sim.task_name,
            instruction=INSTRUCTIONS[sim.task_name],
            embodiment="aloha_sim",
            success=None,
            joints=joints,
            cameras=tuple(self.cams.values()),
            camera_topics=tuple(eb.camera_topic(m) for m in self.cams.values()),
            controllers=self.controllers,
            extra={
                "vla_sim.seed": str(seed),
                "vla_sim.dt": str(DT),
                "vla_sim.sim_cameras": ",".join(self.cams),
                **(extra or {}),
            },
        )
        self.fac = eb.MessageFactory()
        # the storage file is named for the final bag directory (NAME_0.mcap), as rosbag2 names it
        self.writer = eb.EpisodeBagWriter(self.tmp, storage=storage, metadata=meta, bag_name=name)
        for m in self.cams.values():
            self.writer.add_topic(eb.camera_topic(m), eb.IMAGE_TYPE)
        self.writer.add_topic(eb.JOINT_STATES_TOPIC, eb.JOINT_STATE_TYPE)
        self.writer.add_topic(eb.INSTRUCTION_TOPIC, eb.STRING_TYPE)
        self.writer.add_topic(eb.CLOCK_TOPIC, eb.CLOCK_TYPE)
        for c in self.controllers.values():
            self.writer.add_topic(eb.command_topic(c), eb.FLOAT_ARRAY_TYPE)

    def _observe(self, t: float, qpos: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
        eb, w, fac, ns = self._eb, self.writer, self.fac, self._eb.sec_to_ns(t)
        w.write(eb.CLOCK_TOPIC, ns, fac.clock(t))
        for sim_cam, img in images.items():
            w.write(eb.camera_topic(self.cams[sim_cam]), ns, fac.image(img, t, frame_id=sim_cam))
        w.write(eb.JOINT_STATES_TOPIC, ns, fac.joint_state(JOINT_NAMES, qpos, t))

    def reset(self, qpos: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
        self.writer.write(self._eb.INSTRUCTION_TOPIC, 0, self.fac.string(INSTRUCTIONS[self.sim.task_name]))
        self._observe(0.0, qpos, images)

    def step(self, k: int, command: np.ndarray, res: StepResult, images: Mapping[str, np.ndarray]) -> None:
        eb, ns = self._eb, self._eb.sec_to_ns(k * DT)
        for g, vals in split_groups(command).items():
            self.writer.write(eb.command_topic(self.controllers[g]), ns, self.fac.float_array(vals))
        self._observe(res.time, res.qpos, images)

    def finish(self, path: Path, success: bool) -> Path:
        self.writer.set_custom_data("success", "true" if success else "false")
        self.writer.close()
        self.tmp.rename(path)
        return path

    def discard(self) -> None:
        self.writer.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
