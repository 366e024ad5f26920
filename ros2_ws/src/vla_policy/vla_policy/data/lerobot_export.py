"""Export episode bags as a LeRobot dataset (format v3.0 of lerobot 0.4.x, with GR00T's meta/modality.json).

Each bag becomes one episode, sampled at ``fps``: at every frame time the bag's inputs are pushed into the
node's ``ObservationBuffer`` (offline evaluation's ``BagObservationFeed``), and the frame is the buffer's
snapshot (the state in joint-group order, one image per camera) with the recorded command at that time
(``<group>_controller/commands`` held, or ``joint_trajectory`` interpolated) as its ``action``. The
episode starts at the first time with a complete observation and a recorded command, and ends at the
bag's end (or at the first later time without a complete observation, with a warning).

Written:

- ``data/chunk-000/file-000.parquet``: ``observation.state`` and ``action`` (float32 [D], ``names`` =
  the joints, left arm, right arm, claw), ``timestamp`` (float32, ``frame_index / fps``), ``frame_index``,
  ``episode_index``, ``index``, ``task_index``;
- ``videos/observation.images.<camera>/chunk-000/file-000.mp4``: the episodes one after the other (PyAV;
  AV1 with libsvtav1, yuv420p, GOP 2, CRF 30: lerobot's defaults);
- ``meta/info.json``, ``meta/stats.json`` (min, max, mean, std, count, q01..q99; images per channel in
  [0, 1]), ``meta/tasks.parquet`` (the instructions), ``meta/episodes/chunk-000/file-000.parquet``;
- ``meta/modality.json``: the joint groups as ``state``/``action`` slices, the cameras as ``video`` keys,
  the task as ``annotation.human.task_description`` (GR00T's dataset flavour).

The joint groups and cameras come from the bag's metadata (``vla.joint_groups``, ``vla.cameras``) unless
the read config (``--params``) names them. ROS-free.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_policy.data.episode_bag import INSTRUCTION_TOPIC, EpisodeBagReader, MissingTopicError
from vla_policy.data.lerobot_dataset import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
from vla_policy.evaluation.offline_eval import (
    BagObservationFeed,
    EvalConfig,
    episode_ticks,
    load_ground_truth,
    make_observation_buffer,
    resolve_episode,
)
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


class LeRobotExportError(RuntimeError):
    """The bags cannot be exported; one line says why."""


@dataclass(frozen=True)
class ExportConfig:
    fps: float = 0.0  # 0: from the first bag (vla_sim.dt, else the /joint_states rate)
    vcodec: str = "libsvtav1"
    crf: int = 30
    gop: int = 2
    robot_type: str = ""  # "" = the first bag's embodiment
    read: EvalConfig = field(default_factory=EvalConfig)  # joints / cameras / controllers / buffer limits


@dataclass
class _Episode:
    state: np.ndarray  # [N, D]
    action: np.ndarray  # [N, D]
    images: dict[str, list[np.ndarray]]  # camera -> N frames [H, W, 3]
    task: str
    joints: JointGroups
    cameras: tuple[str, ...]
    embodiment: str


def _bag_fps(reader: EpisodeBagReader) -> float:
    dt = reader.custom_data.get("vla_sim.dt")
    if dt:
        return 1.0 / float(dt)
    stamps = np.array([m.timestamp for m in reader.messages(topics=["/joint_states"], decode=False)])
    if len(stamps) < 2:
        raise LeRobotExportError(f"bag {reader.path}: cannot tell its rate; pass --fps")
    return float(round(1e9 / np.median(np.diff(stamps)), 3))


def _instruction(reader: EpisodeBagReader, cfg: EvalConfig) -> str:
    if cfg.default_instruction:
        return cfg.default_instruction
    if INSTRUCTION_TOPIC in reader.topics():
        for m in reader.messages(topics=[INSTRUCTION_TOPIC]):
            if m.msg.data:
                return str(m.msg.data)
    if reader.metadata.instruction:
        return reader.metadata.instruction
    raise MissingTopicError(
        f"bag {reader.path} has no {INSTRUCTION_TOPIC} and no instruction in its metadata"
    )


def _read_episode(path: Path, fps: float, cfg: EvalConfig) -> _Episode:
    with EpisodeBagReader(path) as reader:
        names = tuple(cfg.camera_topics) if cfg.camera_topics else reader.metadata.cameras
        meta, joints, cams, controllers = resolve_episode(reader, cfg, names)
        gt = load_ground_truth(reader, joints, controllers)
        task = _instruction(reader, cfg)
        buffer = make_observation_buffer(cfg, cams, history_frames=1)
        feed = BagObservationFeed(
            reader, buffer, cfg, meta, joints, cams, INSTRUCTION_TOPIC in reader.topics()
        )
        states: list[np.ndarray] = []
        actions: list[np.ndarray] = []
        images: dict[str, list[np.ndarray]] = {c: [] for c in cams}
        try:
            for t in episode_ticks(reader, 1.0 / fps, cfg.max_duration):
                feed.advance(float(t))
                action = gt.at(np.array([t]))[0]
                complete = buffer.check(float(t)) is None and bool(np.all(np.isfinite(action)))
                if not complete:
                    if states:
                        logger.warning(
                            "bag %s: no complete observation at %.3f s: the episode ends there (%d frames)",
                            path,
                            t - reader.start_time * 1e-9,
                            len(states),
                        )
                        break
                    continue
                obs = buffer.snapshot(float(t))
                states.append(np.asarray(obs.state, dtype=np.float32))
                actions.append(action.astype(np.float32))
                for c in cams:
                    images[c].append(np.asarray(obs.images[c]))
        finally:
            feed.close()
    if not states:
        raise LeRobotExportError(f"bag {path}: no time with a complete observation and a recorded command")
    return _Episode(np.stack(states), np.stack(actions), images, task, joints, tuple(cams), meta.embodiment)


# --- statistics -----------------------------------------------------------------------------------------
def _stats(x: np.ndarray) -> dict[str, Any]:
    """LeRobot's statistics of [N, ...] values over axis 0 (images: [N, 3, 1, 1] per-channel reductions)."""
    x = x.astype(np.float64)
    out: dict[str, Any] = {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [int(x.shape[0])],
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0).tolist()
    return out


def _image_stats(frames: Sequence[np.ndarray], max_samples: int = 200) -> dict[str, Any]:
    step = max(1, math.ceil(len(frames) / max_samples))
    x = np.stack(frames[::step]).astype(np.float64) / 255.0  # [n, H, W, 3]
    per_frame = x.reshape(len(x), -1, 3)  # reduce pixels, keep frames for the quantiles
    out = _stats(per_frame.mean(1))
    out["min"] = per_frame.min((0, 1)).tolist()
    out["max"] = per_frame.max((0, 1)).tolist()
    out["mean"] = per_frame.mean((0, 1)).tolist()
    out["std"] = per_frame.std((0, 1)).tolist()
    return {k: [[[v]] for v in vals] if k != "count" else vals for k, vals in out.items()}


# --- writing --------------------------------------------------------------------------------------------
class _VideoWriter:
    def __init__(self, path: Path, fps: float, size: tuple[int, int], cfg: ExportConfig) -> None:
        import av

        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner and configuration at info level
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        rate = round(fps) if abs(fps - round(fps)) < 1e-6 else fps
        self.stream = self.container.add_stream(cfg.vcodec, rate=rate)
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"g": str(cfg.gop), "crf": str(cfg.crf)}
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _fixed_list(values: np.ndarray) -> Any:
    import pyarrow as pa

    flat = pa.array(values.astype(np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _tasks_table(tasks: Sequence[str]) -> Any:
    """meta/tasks.parquet as lerobot's writer leaves it: ``task_index`` with the task text as the pandas
    index (``__index_level_0__``), so that ``pandas.read_parquet`` indexes the tasks by their text."""
    import pyarrow as pa

    def column(name: str | None, field: str, pandas_type: str, numpy_type: str) -> dict[str, Any]:
        return {
            "name": name,
            "field_name": field,
            "pandas_type": pandas_type,
            "numpy_type": numpy_type,
            "metadata": None,
        }

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [column(None, None, "unicode", "object")],  # type: ignore[arg-type]
        "columns": [
            column("task_index", "task_index", "int64", "int64"),
            column(None, "__index_level_0__", "unicode", "object"),
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), type=pa.int64()),
            "__index_level_0__": pa.array(list(tasks), type=pa.large_string()),
        }
    )
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    bags: Sequence[str | Path],
    out: str | Path,
    cfg: ExportConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the bags as a LeRobot dataset at ``out`` (must not exist). Returns a summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = cfg or ExportConfig()
    out = Path(out)
    if out.exists():
        raise LeRobotExportError(f"{out} already exists; choose a new directory")
    if not bags:
        raise LeRobotExportError("no bags given")
    with EpisodeBagReader(bags[0]) as first:
        fps = cfg.fps if cfg.fps > 0 else _bag_fps(first)
    writers: dict[str, _VideoWriter] = {}
    rows: dict[str, list[np.ndarray]] = {"state": [], "action": [], "task": [], "episode": []}
    episodes: list[dict[str, Any]] = []
    tasks: list[str] = []
    image_samples: dict[str, list[np.ndarray]] = {}
    first_ep: _Episode | None = None
    total = 0
    try:
        for e_idx, bag in enumerate(bags):
            ep = _read_episode(Path(bag), fps, cfg.read)
            if first_ep is None:
                first_ep = ep
                out.mkdir(parents=True)
                for cam in ep.cameras:
                    size = ep.images[cam][0].shape[:2]
                    key = IMAGE_PREFIX + cam
                    path = out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
                    writers[cam] = _VideoWriter(path, fps, size, cfg)
            elif ep.joints != first_ep.joints or ep.cameras != first_ep.cameras:
                raise LeRobotExportError(f"bag {bag} maps other joints or cameras than {bags[0]}")
            n = len(ep.state)
            if ep.task not in tasks:
                tasks.append(ep.task)
            row: dict[str, Any] = {
                "episode_index": e_idx,
                "tasks": [ep.task],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": total,
                "dataset_to_index": total + n,
            }
            for cam in ep.cameras:
                w = writers[cam]
                if ep.images[cam][0].shape[:2] != (w.stream.height, w.stream.width):
                    raise LeRobotExportError(f"bag {bag}: camera {cam} has another image size than {bags[0]}")
                key = IMAGE_PREFIX + cam
                row[f"videos/{key}/chunk_index"] = 0
                row[f"videos/{key}/file_index"] = 0
                row[f"videos/{key}/from_timestamp"] = w.frames / fps
                for img in ep.images[cam]:
                    w.add(img)
                row[f"videos/{key}/to_timestamp"] = w.frames / fps
                image_samples.setdefault(cam, []).extend(ep.images[cam][:: max(1, n // 50)])
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            episodes.append(row)
            rows["state"].append(ep.state)
            rows["action"].append(ep.action)
            rows["task"].append(np.full(n, tasks.index(ep.task), dtype=np.int64))
            rows["episode"].append(np.full(n, e_idx, dtype=np.int64))
            total += n
            if log:
                log(f"episode {e_idx}: {bag}: {n} frames at {fps:g} fps, task '{ep.task}'")
    finally:
        for w in writers.values():
            w.close()
    assert first_ep is not None
    joints = first_ep.joints
    names = list(joints.joint_names)
    state, action = np.concatenate(rows["state"]), np.concatenate(rows["action"])
    frame_index = np.concatenate([np.arange(len(s), dtype=np.int64) for s in rows["state"]])
    timestamp = (frame_index / fps).astype(np.float32)
    episode_index, task_index = np.concatenate(rows["episode"]), np.concatenate(rows["task"])
    index = np.arange(total, dtype=np.int64)
    data_path = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                STATE_KEY: _fixed_list(state),
                ACTION_KEY: _fixed_list(action),
                "timestamp": pa.array(timestamp, type=pa.float32()),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(episode_index),
                "index": pa.array(index),
                "task_index": pa.array(task_index),
            }
        ),
        data_path,
    )
    episodes_path = out / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    episodes_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), episodes_path)
    pq.write_table(_tasks_table(tasks), out / "meta" / "tasks.parquet")

    dim = len(names)
    features: dict[str, Any] = {
        STATE_KEY: {"dtype": "float32", "shape": [dim], "names": names},
        ACTION_KEY: {"dtype": "float32", "shape": [dim], "names": names},
    }
    for cam, w in writers.items():
        h, wd = w.stream.height, w.stream.width
        features[IMAGE_PREFIX + cam] = {
            "dtype": "video",
            "shape": [h, wd, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": wd,
                "video.codec": "av1" if "av1" in cfg.vcodec else cfg.vcodec.removeprefix("lib"),
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    for key in ("timestamp",):
        features[key] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": cfg.robot_type or first_ep.embodiment or None,
        "total_episodes": len(episodes),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    stats = {
        STATE_KEY: _stats(state),
        ACTION_KEY: _stats(action),
        "timestamp": _stats(timestamp[:, None]),
        "frame_index": _stats(frame_index[:, None]),
        "episode_index": _stats(episode_index[:, None]),
        "index": _stats(index[:, None]),
        "task_index": _stats(task_index[:, None]),
        **{IMAGE_PREFIX + cam: _image_stats(frames) for cam, frames in image_samples.items()},
    }
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=4) + "\n")
    (out / "meta" / "modality.json").write_text(
        json.dumps(modality(joints, first_ep.cameras), indent=4) + "\n"
    )
    return {
        "out": str(out),
        "episodes": len(episodes),
        "frames": total,
        "fps": fps,
        "tasks": tasks,
        "cameras": list(first_ep.cameras),
        "joints": names,
    }


def modality(joints: JointGroups, cameras: Sequence[str]) -> dict[str, Any]:
    """GR00T's meta/modality.json: the joint groups as slices of state and action, cameras as videos."""
    groups: dict[str, dict[str, int]] = {}
    start = 0
    for g in GROUP_NAMES:
        n = len(joints.group(g))
        if n:
            groups[g] = {"start": start, "end": start + n}
            start += n
    return {
        "state": groups,
        "action": {g: dict(s) for g, s in groups.items()},
        "video": {c: {"original_key": IMAGE_PREFIX + c} for c in cameras},
        "annotation": {"human.task_description": {"original_key": "task_index"}},
    }
