"""Read LeRobot datasets (format v3.0, lerobot 0.4.x; GR00T's flavour with ``meta/modality.json``).

A dataset directory holds:

- ``meta/info.json``: ``codebase_version`` ("v3.0"), ``fps``, ``features`` (dtype, shape, ``names``; videos
  with their codec), ``data_path`` / ``video_path`` templates, totals;
- ``meta/tasks.parquet``: ``task_index`` and the task text (the pandas index of lerobot's writer);
- ``meta/episodes/chunk-XXX/file-XXX.parquet``: one row per episode: ``episode_index``, ``tasks``,
  ``length``, ``dataset_from_index`` / ``dataset_to_index``, ``data/chunk_index`` / ``data/file_index``
  and, per video key, ``videos/<key>/chunk_index``, ``file_index``, ``from_timestamp``, ``to_timestamp``;
- ``data/chunk-XXX/file-XXX.parquet``: one row per frame: ``observation.state`` and ``action`` (float32
  [D]), ``timestamp`` (seconds from the episode's start), ``frame_index``, ``episode_index``, ``index``,
  ``task_index``;
- ``videos/<key>/chunk-XXX/file-XXX.mp4``: the episodes of one camera, one after the other;
- optionally ``meta/stats.json`` and GR00T's ``meta/modality.json`` (``state`` / ``action`` groups as
  ``{start, end}`` slices, ``video`` keys as ``{original_key}``).

:class:`LeRobotFeed` pushes an episode's frames into the node's ``ObservationBuffer`` with their
timestamps, as :class:`~vla_policy.evaluation.offline_eval.BagObservationFeed` pushes a bag's messages, so
that training on a LeRobot dataset sees the observations the node builds. Videos are decoded with PyAV.
ROS-free; errors are :class:`LeRobotDatasetError` with one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups, JointMappingError
from vla_policy.runtime.observation_buffer import InstructionRejected, ObservationBuffer

logger = logging.getLogger(__name__)

INFO_FILE = Path("meta") / "info.json"
MODALITY_FILE = Path("meta") / "modality.json"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
SUPPORTED_VERSIONS = ("v3.0",)


class LeRobotDatasetError(RuntimeError):
    """The directory cannot be read as a LeRobot dataset; the message (one line) says why."""


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / INFO_FILE).is_file()


@dataclass(frozen=True)
class EpisodeEntry:
    """One row of ``meta/episodes``: where an episode's frames and video segments are."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: tuple[int, int]  # (chunk, file)
    videos: Mapping[str, tuple[int, int, float, float]]  # key -> (chunk, file, from_timestamp, to_timestamp)


@dataclass
class EpisodeFrames:
    """An episode's frames: ``timestamps`` [N] (seconds from its start), ``state`` / ``action`` float32
    [N, D] with the dataset's names, ``task_index`` [N]."""

    timestamps: np.ndarray
    state: np.ndarray
    action: np.ndarray
    task_index: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)  # video key -> uint8 [N, H, W, 3]


def _names(feature: Mapping[str, Any], key: str) -> tuple[str, ...]:
    names = feature.get("names")
    if isinstance(names, Mapping):  # older lerobot: {"motors": [...]}
        names = next(iter(names.values()), None)
    dim = int(feature.get("shape", [0])[0])
    if not names:
        return tuple(f"{key}.{i}" for i in range(dim))
    if len(names) != dim:
        raise LeRobotDatasetError(f"feature {key} has {len(names)} names for {dim} values")
    return tuple(str(n) for n in names)


class LeRobotDatasetReader:
    """The metadata of a dataset at ``root``, and its episodes on demand (``frames``)."""

    def __init__(self, root: str | Path) -> None:
        import pyarrow.parquet as pq

        self.root = Path(root)
        try:
            self.info: dict[str, Any] = json.loads((self.root / INFO_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise LeRobotDatasetError(f"{self.root / INFO_FILE} is unreadable: {exc}") from exc
        version = str(self.info.get("codebase_version", ""))
        if version not in SUPPORTED_VERSIONS:
            raise LeRobotDatasetError(
                f"{self.root}: LeRobot dataset format {version or '(none)'} is not supported (expected "
                f"{' or '.join(SUPPORTED_VERSIONS)}; lerobot converts older datasets with "
                "lerobot.datasets.v30.convert_dataset_v21_to_v30)"
            )
        self.features: dict[str, Any] = dict(self.info.get("features", {}))
        for key in (STATE_KEY, ACTION_KEY):
            if key not in self.features:
                raise LeRobotDatasetError(f"{self.root}: info.json has no feature '{key}'")
        self.fps = float(self.info["fps"])
        self.state_names = _names(self.features[STATE_KEY], STATE_KEY)
        self.action_names = _names(self.features[ACTION_KEY], ACTION_KEY)
        self.video_keys = tuple(k for k, f in self.features.items() if f.get("dtype") == "video")
        self.modality: dict[str, Any] = {}
        if (self.root / MODALITY_FILE).is_file():
            try:
                self.modality = json.loads((self.root / MODALITY_FILE).read_text())
            except ValueError as exc:
                raise LeRobotDatasetError(f"{self.root / MODALITY_FILE} is not JSON: {exc}") from exc
        try:
            self.tasks = self._read_tasks(pq)
            self.episodes = self._read_episodes(pq)
        except (OSError, KeyError, ValueError) as exc:
            raise LeRobotDatasetError(f"{self.root}: unreadable metadata: {exc}") from exc
        self._data_cache: dict[tuple[int, int], Any] = {}

    def _read_tasks(self, pq: Any) -> dict[int, str]:
        table = pq.read_table(self.root / "meta" / "tasks.parquet")
        text_col = "task"
        if text_col not in table.column_names:
            pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            text_col = next(iter(pandas_meta.get("index_columns", [])), "")
            if not isinstance(text_col, str) or text_col not in table.column_names:
                raise ValueError("meta/tasks.parquet has no task text column")
        rows = table.select(["task_index", text_col]).to_pylist()
        return {int(r["task_index"]): str(r[text_col]) for r in rows}

    def _read_episodes(self, pq: Any) -> list[EpisodeEntry]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise ValueError("no meta/episodes/chunk-*/file-*.parquet")
        out: list[EpisodeEntry] = []
        for f in files:
            table = pq.read_table(f)
            wanted = [c for c in table.column_names if not c.startswith("stats/")]
            for row in table.select(wanted).to_pylist():
                videos = {
                    k: (
                        int(row[f"videos/{k}/chunk_index"]),
                        int(row[f"videos/{k}/file_index"]),
                        float(row[f"videos/{k}/from_timestamp"]),
                        float(row[f"videos/{k}/to_timestamp"]),
                    )
                    for k in self.video_keys
                }
                out.append(
                    EpisodeEntry(
                        index=int(row["episode_index"]),
                        length=int(row["length"]),
                        tasks=tuple(row.get("tasks") or ()),
                        data_file=(int(row["data/chunk_index"]), int(row["data/file_index"])),
                        videos=videos,
                    )
                )
        return sorted(out, key=lambda e: e.index)

    # --- frames -----------------------------------------------------------------------------------------
    def _data_table(self, chunk: int, file: int) -> Any:
        import pyarrow.parquet as pq

        if (chunk, file) not in self._data_cache:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            cols = [STATE_KEY, ACTION_KEY, "timestamp", "episode_index", "frame_index", "task_index"]
            self._data_cache = {(chunk, file): pq.read_table(path, columns=cols)}  # one file at a time
        return self._data_cache[(chunk, file)]

    def frames(self, episode: EpisodeEntry, videos: Sequence[str] = ()) -> EpisodeFrames:
        """The episode's frames, with the decoded frames of the video keys ``videos``."""
        import pyarrow.compute as pc

        try:
            table = self._data_table(*episode.data_file)
        except (OSError, KeyError, ValueError) as exc:
            raise LeRobotDatasetError(f"{self.root}: episode {episode.index}: {exc}") from exc
        rows = table.filter(pc.equal(table["episode_index"], episode.index)).sort_by("frame_index")
        if rows.num_rows != episode.length:
            raise LeRobotDatasetError(
                f"{self.root}: episode {episode.index} has {rows.num_rows} frames in its data file, the "
                f"episodes index says {episode.length}"
            )
        out = EpisodeFrames(
            timestamps=rows["timestamp"].to_numpy().astype(np.float64),
            state=np.stack(rows[STATE_KEY].to_numpy(zero_copy_only=False)).astype(np.float32),
            action=np.stack(rows[ACTION_KEY].to_numpy(zero_copy_only=False)).astype(np.float32),
            task_index=rows["task_index"].to_numpy(),
        )
        for key in videos:
            out.images[key] = self.video_frames(episode, key)
        return out

    def video_frames(self, episode: EpisodeEntry, key: str) -> np.ndarray:
        """uint8 [length, H, W, 3] RGB: the episode's segment of the camera's video file (PyAV)."""
        import av

        if key not in episode.videos:
            raise LeRobotDatasetError(f"{self.root}: no video '{key}' (has: {', '.join(self.video_keys)})")
        chunk, file, t0, t1 = episode.videos[key]
        path = self.root / self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
        half = 0.5 / self.fps
        frames: list[np.ndarray] = []
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                if t0 > 0:
                    container.seek(int(max(0.0, t0 - half) / stream.time_base), stream=stream, backward=True)
                for frame in container.decode(stream):
                    t = float(frame.pts * stream.time_base)
                    if t < t0 - half:
                        continue
                    if t >= t1 - half:
                        break
                    frames.append(frame.to_ndarray(format="rgb24"))
        except (OSError, av.FFmpegError) as exc:
            raise LeRobotDatasetError(f"{path}: cannot decode: {exc}") from exc
        if len(frames) != episode.length:
            raise LeRobotDatasetError(
                f"{path}: {len(frames)} frames in [{t0:g}, {t1:g}) s for episode {episode.index} of "
                f"{episode.length} frames"
            )
        return np.stack(frames)

    # --- mapping onto the model -------------------------------------------------------------------------
    def joint_groups(self, configured: JointGroups | None) -> JointGroups:
        """The joint groups: ``configured`` (--params), else the dataset's ``meta/modality.json`` state
        groups named like the model's groups (left_arm, right_arm, claw)."""
        if configured is not None:
            return configured
        groups = {g: s for g, s in (self.modality.get("state") or {}).items() if g in GROUP_NAMES}
        if not groups:
            raise LeRobotDatasetError(
                f"{self.root}: no joint mapping: pass --params with joints.left_arm/right_arm/claw naming "
                f"the dataset's observation.state names {list(self.state_names)[:8]}..., or add "
                "meta/modality.json state groups named left_arm, right_arm, claw"
            )
        names = {g: self.state_names[int(s["start"]) : int(s["end"])] for g, s in groups.items()}
        return JointGroups(**{g: tuple(names.get(g, ())) for g in GROUP_NAMES})

    def camera_keys(
        self, model_cameras: Sequence[str], configured: Mapping[str, str] | None
    ) -> dict[str, str]:
        """Model camera -> video key: ``configured`` (when it names a video key), else modality.json's
        ``video.<camera>.original_key``, else ``observation.images.<camera>``."""
        video = self.modality.get("video") or {}
        out: dict[str, str] = {}
        for cam in model_cameras:
            key = (configured or {}).get(cam, "")
            if key not in self.video_keys:
                key = str((video.get(cam) or {}).get("original_key", IMAGE_PREFIX + cam))
            if key not in self.video_keys:
                raise LeRobotDatasetError(
                    f"{self.root}: no video for the model's camera '{cam}' (expected {IMAGE_PREFIX}{cam}; "
                    f"the dataset has {', '.join(self.video_keys) or 'no videos'})"
                )
            out[cam] = key
        return out


def action_ground_truth(frames: EpisodeFrames, names: Sequence[str], joints: JointGroups) -> Any:
    """The recorded actions as offline evaluation's ``GroundTruth`` (commands held until the next frame)."""
    from vla_policy.evaluation.offline_eval import GroundTruth

    missing = [n for n in joints.joint_names if n not in names]
    if missing:
        raise LeRobotDatasetError(f"the dataset's action names lack the configured joints {missing}")
    gt = GroundTruth(joints)
    index = {n: i for i, n in enumerate(names)}
    for g in joints.active_groups:
        cols = [index[n] for n in joints.group(g)]
        for t, row in zip(frames.timestamps, frames.action[:, cols], strict=True):
            gt.add_forward(g, float(t), row, ACTION_KEY)
    return gt


class LeRobotFeed:
    """Push an episode's frames (state, camera images, task) into an ObservationBuffer in time order, as
    the node's subscriptions do: ``advance(now)`` delivers every frame stamped up to ``now``."""

    def __init__(
        self,
        frames: EpisodeFrames,
        buffer: ObservationBuffer,
        state_names: Sequence[str],
        joints: JointGroups,
        cams: Mapping[str, str],
        instruction: str,
    ) -> None:
        self.frames, self.buffer, self.cams = frames, buffer, dict(cams)
        missing = [n for n in joints.joint_names if n not in state_names]
        if missing:
            raise LeRobotDatasetError(
                f"the dataset's observation.state names lack the configured joints {missing} (has "
                f"{list(state_names)[:20]})"
            )
        try:
            self.states = np.stack(
                [joints.state_from_joint_state(list(state_names), s) for s in frames.state]
            )
        except JointMappingError as exc:
            raise LeRobotDatasetError(f"observation.state: {exc}") from exc
        try:
            buffer.set_instruction(instruction)
        except InstructionRejected as exc:
            raise LeRobotDatasetError(f"instruction rejected: {exc.reason}") from exc
        self.next = 0

    def advance(self, now: float) -> None:
        f = self.frames
        while self.next < len(f.timestamps) and f.timestamps[self.next] <= now + 1e-9:
            i, t = self.next, float(f.timestamps[self.next])
            self.next += 1
            self.buffer.update_state(self.states[i], t)
            for cam, key in self.cams.items():
                self.buffer.update_image(cam, f.images[key][i], t)

    def close(self) -> None:
        self.next = len(self.frames.timestamps)
