"""Data types shared by the policy, the prefix backends and the experts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

KVPairs = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class Observation:
    """One observation. images: camera name -> uint8 [H, W, 3] RGB, or [F, H, W, 3] with history (oldest
    first); state: float32 [state_dim] raw joint positions (left, right, claw); instruction: text."""

    images: Mapping[str, np.ndarray]
    state: np.ndarray
    instruction: str
    embodiment_id: int = 0
    stamp: float = 0.0


@dataclass(frozen=True)
class PrefixOutput:
    """What a prefix backend returns, once per chunk.

    features: [B, L, D_vl] after vlln + vl_self_attention. attention_mask: [B, L] bool (True = token).
    cross_kv: per cross-attention DiT block (K, V), each [B, heads, L, head_dim]; None -> recomputed.
    layer_kv: per LLM layer (K, V), for the deep-fusion / KV-cache experts.
    """

    features: torch.Tensor
    attention_mask: torch.Tensor
    cross_kv: KVPairs | None = None
    layer_kv: KVPairs | None = None


@dataclass(frozen=True)
class ActionChunkResult:
    """actions: float32 [T, 16] unnormalised [left 7, right 7, claw 2]; groups: name -> [T, n];
    dt: seconds between actions; timings: stage -> seconds."""

    actions: np.ndarray
    groups: dict[str, np.ndarray]
    dt: float
    timings: dict[str, float] = field(default_factory=dict)


def synthetic_observation(
    cameras: tuple[str, ...],
    image_size: int,
    state_dim: int = 16,
    history: int = 1,
    instruction: str = "pick up the red cube",
    seed: int = 0,
) -> Observation:
    """A deterministic random observation (for predict/bench without data)."""
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size, 3) if history == 1 else (history, image_size, image_size, 3)
    images = {c: rng.integers(0, 256, size=shape, dtype=np.uint8) for c in cameras}
    state = rng.uniform(-1.0, 1.0, size=state_dim).astype(np.float32)
    return Observation(images=images, state=state, instruction=instruction)
