"""Shared pieces of the inference worker tests: tiny checkpoints, observations, process and memory probes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import Observation
from vla_policy.runtime.inference import PolicySpec
from vla_policy.strict_config import replace

START_TIMEOUT = 600.0  # seconds: a child imports torch and loads the model, on a machine that may be busy
RESULT_TIMEOUT = 300.0
MEMFD_PREFIX = "memfd:vla-worker"


def write_checkpoint(path: Path, seed: int = 11, history_frames: int = 1) -> Path:
    """A random tiny checkpoint (``history_frames`` frames per camera) written to ``path``."""
    cfg = get_preset("tiny")
    cfg = replace(cfg, backbone=replace(cfg.backbone, history_frames=history_frames))
    VLAPolicy(cfg, seed=seed).save(path, random_init=True)
    return path


def spec_for(checkpoint: Path, **changes: object) -> PolicySpec:
    """One torch thread: MKL's threaded GEMM is not bitwise reproducible, one thread is."""
    return PolicySpec(checkpoint=str(checkpoint), torch_threads=1, **changes)  # type: ignore[arg-type]


def observation(
    cameras: tuple[str, ...], sizes: list[tuple[int, int]], history: int = 1, seed: int = 0
) -> Observation:
    """Random RGB frames, camera ``i`` of size ``sizes[i]`` (H, W); [H, W, 3] or [history, H, W, 3]."""
    rng = np.random.default_rng(seed)
    images = {}
    for cam, (h, w) in zip(cameras, sizes, strict=True):
        shape = (h, w, 3) if history == 1 else (history, h, w, 3)
        images[cam] = rng.integers(0, 256, size=shape, dtype=np.uint8)
    state = rng.uniform(-1.0, 1.0, size=16).astype(np.float32)
    return Observation(images=images, state=state, instruction="pick up the red cube", stamp=1.5)


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll ``condition`` every 20 ms for up to ``timeout`` s (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def child_pids() -> set[int]:
    """Process ids whose parent is this process (zombies included: they are not reaped yet)."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            out.add(int(entry))
    return out


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (no longer in /proc, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def worker_memory() -> dict[str, list[str]]:
    """This process's shared memory of inference workers: open memfds, their mappings, /dev/shm names."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if MEMFD_PREFIX in target:
            fds.append(target)
    maps = [line.strip() for line in Path("/proc/self/maps").read_text().splitlines() if MEMFD_PREFIX in line]
    shm = sorted(n for n in os.listdir("/dev/shm") if "vla" in n) if Path("/dev/shm").is_dir() else []
    return {"fds": sorted(fds), "maps": maps, "dev_shm": shm}
