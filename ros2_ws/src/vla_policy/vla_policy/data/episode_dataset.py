"""Training windows from episode bags or LeRobot datasets: an observation (built exactly as the node builds
it) and the action chunk recorded after it.

``--data DIR`` may hold episode bags (rosbag2 directories) and LeRobot datasets (``meta/info.json``, format
v3.0; see :mod:`vla_policy.data.lerobot_dataset`), or be one of them. A LeRobot episode goes through the
same path as a bag: its frames are pushed with their timestamps into the node's ``ObservationBuffer``
(:class:`~vla_policy.data.lerobot_dataset.LeRobotFeed`), its ``action`` column is the recorded command
(held until the next frame), and the windows are cut at the same ticks.

Each bag is stepped in simulated time at the model's ``dt`` with offline evaluation's
:class:`~vla_policy.evaluation.offline_eval.BagObservationFeed` and the
node's ``ObservationBuffer``; every tick at
which the buffer yields a snapshot gives a window. Its action chunk is the recorded commands
(``<group>_controller/commands`` or ``joint_trajectory``, the ground truth of offline evaluation) at
``obs.stamp + k * dt`` for ``k < action_horizon``: the times at which the ``ChunkScheduler`` executes the
chunk's actions. Past the end of the episode the last command is held. Commands are in state-vector
order and are expanded to the head's 16-D layout; head dims without a joint are masked out of the loss.

Bags are decoded in parallel threads. Camera frames larger than ``max_image_side`` are downscaled once at
load time (keeping the aspect ratio) so that memory stays bounded; frames shared by consecutive windows
are stored once. :class:`BatchBuilder` builds batches (augmentation, ``policy.make_batch``), each a pure
function of its RNG keys so that a resumed run sees the same batches; the trainer's worker processes
call it (:mod:`vla_policy.training.sampler`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vla_policy.data.episode_bag import (
    INSTRUCTION_TOPIC,
    EpisodeBagError,
    EpisodeBagReader,
    MissingTopicError,
    one_line,
)
from vla_policy.data.lerobot_dataset import (
    LeRobotDatasetError,
    LeRobotDatasetReader,
    LeRobotFeed,
    action_ground_truth,
    is_lerobot_dataset,
)
from vla_policy.evaluation.offline_eval import (
    BagObservationFeed,
    EvalConfig,
    EvalError,
    GroundTruth,
    episode_ticks,
    load_ground_truth,
    make_observation_buffer,
    resolve_episode,
)
from vla_policy.model.normalization import FeatureStats
from vla_policy.observation import Observation
from vla_policy.runtime.joint_groups import JointGroups

logger = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """The data directory cannot be used for training; one line says why."""


@dataclass(frozen=True)
class DatasetConfig:
    action_horizon: int = 16
    dt: float = 0.05  # seconds between ticks and between the actions of a chunk (the model's dt)
    cameras: tuple[str, ...] = ("head", "left_wrist", "right_wrist")  # the model's camera names
    history_frames: int = 1
    stride: int = 1  # ticks between consecutive windows
    max_image_side: int = 256  # frames with a longer side are downscaled at load time (0 = never)
    embodiment_id: int = 0
    read: EvalConfig = field(default_factory=EvalConfig)  # joints / cameras / controllers / buffer limits


@dataclass
class Episode:
    path: Path
    observations: list[Observation]
    actions: np.ndarray  # float32 [N, T, 16] raw (unnormalised), head layout
    states: np.ndarray  # float32 [N, state_dim]
    action_dims: np.ndarray  # bool [16]: head dims with a joint
    joints: JointGroups
    skipped: int = 0  # ticks without a snapshot or without a recorded command yet

    def __len__(self) -> int:
        return len(self.observations)


# --- finding and reading bags ---------------------------------------------------------------------------
def find_bags(data: str | Path) -> list[Path]:
    """Episode sources under ``data``, sorted: bag directories and LeRobot dataset roots (``data`` itself
    when it is one). :func:`load_episodes` reads every episode of a LeRobot dataset."""
    root = Path(data)
    if not root.exists():
        raise DatasetError(f"data directory {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; expected a directory of episode bags")
    if (root / "metadata.yaml").is_file() or is_lerobot_dataset(root):
        return [root]
    datasets = {p.parent.parent for p in root.rglob("meta/info.json")}
    bags = {p.parent for p in root.rglob("metadata.yaml") if not any(d in p.parents for d in datasets)}
    found = sorted(bags | datasets)
    if not found:
        raise DatasetError(
            f"no episode bags under {root}: expected rosbag2 directories with metadata.yaml "
            "(write some with `vla-sim demos` or `vla-bag sample`) or LeRobot datasets (meta/info.json)"
        )
    return found


def _shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale [H, W, 3] or [F, H, W, 3] uint8 so that its longer side is ``max_side``."""
    h, w = image.shape[-3], image.shape[-2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    frames = image if image.ndim == 4 else image[None]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out if image.ndim == 4 else out[0]


def _with_images(o: Observation, images: Mapping[str, np.ndarray]) -> Observation:
    return Observation(
        images=images, state=o.state, instruction=o.instruction, embodiment_id=o.embodiment_id, stamp=o.stamp
    )


def read_episode(path: str | Path, cfg: DatasetConfig) -> Episode:
    """All windows of one bag (see the module docstring)."""
    path = Path(path)
    rcfg = cfg.read
    with EpisodeBagReader(path) as reader:
        meta, joints, cams, controllers = resolve_episode(reader, rcfg, cfg.cameras)
        gt = load_ground_truth(reader, joints, controllers)
        has_instruction = INSTRUCTION_TOPIC in reader.topics()
        if not has_instruction and not (rcfg.default_instruction or meta.instruction):
            raise MissingTopicError(
                f"bag {path} has no topic {INSTRUCTION_TOPIC} and no instruction in its metadata"
            )
        buffer = make_observation_buffer(rcfg, cams, cfg.history_frames, cfg.embodiment_id)
        feed = BagObservationFeed(reader, buffer, rcfg, meta, joints, cams, has_instruction)
        ticks = episode_ticks(reader, cfg.dt, rcfg.max_duration)
        try:
            return _windows(path, feed, buffer, ticks, gt, joints, cfg)
        finally:
            feed.close()


def read_lerobot_episodes(root: str | Path, cfg: DatasetConfig) -> list[Episode]:
    """All windows of every episode of a LeRobot dataset (``path`` of each: ``root/episode_NNNNNN``)."""
    ds = LeRobotDatasetReader(root)
    rcfg = cfg.read
    joints = ds.joint_groups(rcfg.joints)
    cams = ds.camera_keys(cfg.cameras, rcfg.camera_topics)
    out: list[Episode] = []
    for entry in ds.episodes:
        frames = ds.frames(entry, videos=sorted(set(cams.values())))
        task = (
            rcfg.default_instruction or ds.tasks.get(int(frames.task_index[0]), "")
            if len(frames.task_index)
            else ""
        )
        if not task:
            raise LeRobotDatasetError(f"{ds.root}: episode {entry.index} has no task text")
        buffer = make_observation_buffer(rcfg, cams, cfg.history_frames, cfg.embodiment_id)
        feed = LeRobotFeed(frames, buffer, ds.state_names, joints, cams, task)
        gt = action_ground_truth(frames, ds.action_names, joints)
        t_end = float(frames.timestamps[-1]) if len(frames.timestamps) else 0.0
        if rcfg.max_duration > 0:
            t_end = min(t_end, rcfg.max_duration)
        ticks = np.arange(math.floor(t_end / cfg.dt + 1e-9) + 1) * cfg.dt
        out.append(_windows(ds.root / f"episode_{entry.index:06d}", feed, buffer, ticks, gt, joints, cfg))
    return out


def _windows(
    path: Path,
    feed: BagObservationFeed | LeRobotFeed,
    buffer: Any,
    ticks: np.ndarray,
    gt: GroundTruth,
    joints: JointGroups,
    cfg: DatasetConfig,
) -> Episode:
    """Step ``feed`` through ``ticks``; each tick with a snapshot and recorded commands is a window."""
    obs: list[Observation] = []
    stamps: list[float] = []
    skipped = 0
    last: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # camera -> (source frame, stored frame)
    for k, now in enumerate(ticks):
        feed.advance(float(now))
        if k % cfg.stride:
            continue
        if buffer.check(float(now)) is not None:
            skipped += 1
            continue
        o = buffer.snapshot(float(now))
        images = {}
        for cam, img in o.images.items():
            prev = last.get(cam)
            if prev is None or prev[0] is not img:
                prev = (img, _shrink(np.asarray(img), cfg.max_image_side))
                last[cam] = prev
            images[cam] = prev[1]
        obs.append(_with_images(o, images))
        stamps.append(o.stamp)
    t = np.asarray(stamps, dtype=np.float64)[:, None] + np.arange(cfg.action_horizon)[None] * cfg.dt
    recorded = gt.at(t.reshape(-1)).reshape(len(stamps), cfg.action_horizon, joints.state_dim)
    ok = np.all(np.isfinite(recorded), axis=(1, 2)) if len(stamps) else np.zeros(0, bool)
    skipped += int((~ok).sum())
    obs = [o for o, good in zip(obs, ok, strict=True) if good]
    actions = joints.expand_to_actions(recorded[ok].astype(np.float32))
    dims = np.zeros(actions.shape[-1] if actions.size else 16, dtype=bool)
    dims[joints.action_indices()] = True
    states = np.stack([o.state for o in obs]).astype(np.float32) if obs else np.zeros((0, joints.state_dim))
    return Episode(path, obs, actions, states, dims, joints, skipped)


def load_episodes(
    paths: Sequence[Path], cfg: DatasetConfig, workers: int = 2, progress: bool = False
) -> list[Episode]:
    """Read bags (and LeRobot datasets) in parallel threads; a bad one is a :class:`DatasetError` naming
    it."""

    def one(p: Path) -> list[Episode]:
        try:
            return read_lerobot_episodes(p, cfg) if is_lerobot_dataset(p) else [read_episode(p, cfg)]
        except LeRobotDatasetError as exc:
            raise DatasetError(f"LeRobot dataset {p}: {one_line(exc)}") from exc
        except (EpisodeBagError, EvalError, ValueError, OSError) as exc:
            raise DatasetError(f"bag {p}: {one_line(exc)}") from exc

    workers = max(1, min(workers, len(paths)))
    if workers == 1:
        episodes = [e for p in paths for e in one(p)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="bag") as pool:
            episodes = [e for eps in pool.map(one, paths) for e in eps]
    empty = [str(e.path) for e in episodes if len(e) == 0]
    if empty:
        logger.warning("no usable windows in %s", ", ".join(empty))
    episodes = [e for e in episodes if len(e)]
    if not episodes:
        raise DatasetError("no usable windows in any bag (no snapshot with recorded commands after it)")
    joints = {e.joints for e in episodes}
    if len(joints) > 1:
        raise DatasetError("bags map different joints; pass --params with one joint mapping")
    return episodes


def split_episodes(
    episodes: Sequence[Episode], val_fraction: float, seed: int
) -> tuple[list[Episode], list[Episode]]:
    """Held-out split by episode (at least one held out when ``val_fraction > 0`` and there are two)."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val fraction must be in [0, 1), got {val_fraction}")
    n = len(episodes)
    n_val = 0 if val_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    if val_fraction > 0 and n < 2:
        logger.warning("one episode only: no held-out validation split")
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(order[:n_val].tolist())
    return [e for i, e in enumerate(episodes) if i not in val], [episodes[i] for i in val]


def compute_statistics(episodes: Sequence[Episode]) -> dict[str, FeatureStats]:
    """min/max/mean/std/q01/q99 of the state and of the actions (each tick's chunk, all steps)."""
    states = np.concatenate([e.states for e in episodes])
    actions = np.concatenate([e.actions.reshape(-1, e.actions.shape[-1]) for e in episodes])
    return {"state": FeatureStats.compute(states), "action": FeatureStats.compute(actions)}


# --- augmentation ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)  # side fraction of the random crop
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue_shift: float = 0.02  # fraction of a full turn, approximated by a channel mix


def augment_image(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random crop (same for every history frame) then colour jitter; uint8 in, uint8 out."""
    frames = image if image.ndim == 4 else image[None]
    h, w = frames.shape[1:3]
    s = rng.uniform(*cfg.crop_scale)
    ch, cw = max(1, round(h * s)), max(1, round(w * s))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    x = frames[:, y0 : y0 + ch, x0 : x0 + cw].astype(np.float32)
    b = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    sat = 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
    x *= b
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * sat
    x = x.mean(axis=(1, 2, 3), keepdims=True) + (x - x.mean(axis=(1, 2, 3), keepdims=True)) * c
    if cfg.hue_shift > 0:
        a = rng.uniform(-cfg.hue_shift, cfg.hue_shift) * 2 * math.pi
        # rotation about the grey axis of RGB space: a hue rotation
        cos, sin, k = math.cos(a), math.sin(a), 1.0 / 3.0
        sq = math.sqrt(k)
        m = np.array(
            [
                [cos + (1 - cos) * k, k * (1 - cos) - sq * sin, k * (1 - cos) + sq * sin],
                [k * (1 - cos) + sq * sin, cos + k * (1 - cos), k * (1 - cos) - sq * sin],
                [k * (1 - cos) - sq * sin, k * (1 - cos) + sq * sin, cos + k * (1 - cos)],
            ],
            dtype=np.float32,
        )
        x = x @ m.T
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return out if image.ndim == 4 else out[0]


# --- windows and batches --------------------------------------------------------------------------------
class WindowDataset:
    """A flat index over the windows of some episodes."""

    def __init__(self, episodes: Sequence[Episode]) -> None:
        self.episodes = list(episodes)
        self.index = [(i, j) for i, e in enumerate(self.episodes) for j in range(len(e))]
        dims = [e.action_dims for e in self.episodes]
        self.action_dims = np.logical_or.reduce(dims) if dims else np.zeros(16, bool)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> tuple[Observation, np.ndarray]:
        i, j = self.index[k]
        e = self.episodes[i]
        return e.observations[j], e.actions[j]


class BatchBuilder:
    """``build(step)``: the training batch of ``step``, a pure function of ``(seed, step)``."""

    def __init__(
        self,
        policy: Any,
        dataset: WindowDataset,
        batch_size: int,
        seed: int,
        augment: AugmentConfig,
    ) -> None:
        if len(dataset) == 0:
            raise DatasetError("no training windows")
        self.policy = policy
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment

    def indices(self, step: int) -> np.ndarray:
        """Without replacement within an epoch: the epoch's permutation is seeded by (seed, epoch)."""
        n = len(self.dataset)
        pos = step * self.batch_size + np.arange(self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(pos // n):
            perm = np.random.default_rng([self.seed, 1, int(epoch)]).permutation(n)
            sel = pos // n == epoch
            out[sel] = perm[pos[sel] % n]
        return out

    def build(self, step: int, augment: bool | None = None) -> dict[str, Any]:
        return self.build_indices(self.indices(step), [self.seed, 2, step], augment)

    def build_indices(
        self,
        idx: Sequence[int],
        rng_key: Sequence[int],
        augment: bool | None = None,
        sample_keys: Sequence[Sequence[int]] | None = None,
    ) -> dict[str, Any]:
        """``sample_keys`` (one per window) seed each window's augmentation on its own instead of
        ``rng_key`` (the distributed trainer: a window is augmented alike in whichever batch it lands)."""
        rng = np.random.default_rng(list(rng_key))
        do_aug = self.augment.enabled if augment is None else augment
        obs, acts = [], []
        for n, k in enumerate(idx):
            o, a = self.dataset[int(k)]
            if do_aug:
                r = rng if sample_keys is None else np.random.default_rng(list(sample_keys[n]))
                images = {c: augment_image(np.asarray(v), r, self.augment) for c, v in o.images.items()}
                o = _with_images(o, images)
            obs.append(o)
            acts.append(a)
        batch = self.policy.make_batch(obs, acts)
        mask = torch.as_tensor(self.dataset.action_dims, device=batch["action_mask"].device)
        batch["action_mask"][..., : mask.shape[0]] &= mask
        return batch


def describe_episodes(episodes: Sequence[Episode]) -> dict[str, Any]:
    return {
        "episodes": len(episodes),
        "windows": int(sum(len(e) for e in episodes)),
        "skipped_ticks": int(sum(e.skipped for e in episodes)),
        "bags": [e.path.name for e in episodes],
    }


def dataset_config_for(policy_config: Any, read: EvalConfig, **kw: Any) -> DatasetConfig:
    """The DatasetConfig matching a model config (horizon, dt, cameras, history frames)."""
    bb = policy_config.backbone
    return DatasetConfig(
        action_horizon=int(policy_config.action_horizon),
        dt=float(policy_config.dt),
        cameras=tuple(bb.cameras),
        history_frames=int(bb.history_frames),
        read=read,
        **kw,
    )


def stats_mapping(stats: Mapping[str, FeatureStats]) -> dict[str, dict[str, list[float]]]:
    return {k: v.to_dict() for k, v in stats.items()}
