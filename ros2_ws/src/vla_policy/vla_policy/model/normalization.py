"""Dataset statistics and the state/action normaliser (a processor object, as in LeRobot).

``statistics.json``::

    {"state":  {"min": [...], "max": [...], "mean": [...], "std": [...], "q01": [...], "q99": [...]},
     "action": {... same keys, 16 dims [left 7, right 7, claw 2] ...}}

Modes per group (``NormalizationConfig``): ``min_max`` maps [min, max] (or [q01, q99]) to [-1, 1],
``q99`` maps [q01, q99] to [-1, 1] and clips (GR00T's), ``mean_std`` standardises, ``identity`` passes
through. State dims follow the action layout (left, right,
claw), dims past it use the ``extra`` mode; ``state_modes``/``action_modes`` (an imported checkpoint's
per-modality modes) replace the group modes dim by dim, and dims past them are ``identity`` (padding), as
are action dims past the statistics (the reference decoder predicts all ``max_action_dim`` dims).
Dims with a zero range map to 0 (and back to min), as GR00T does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_policy.model.config import NormalizationConfig

logger = logging.getLogger(__name__)

STAT_KEYS = ("min", "max", "mean", "std", "q01", "q99")
GROUP_SLICES = {"left_arm": slice(0, 7), "right_arm": slice(7, 14), "claw": slice(14, 16)}

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension statistics of one feature; each array is float64 [D]."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.min.shape[0])

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> FeatureStats:
        missing = [k for k in STAT_KEYS if k not in data]
        if missing:
            raise ValueError(f"{where}: missing statistics {missing}; expected {list(STAT_KEYS)}")
        unknown = [k for k in data if k not in STAT_KEYS]
        if unknown:
            raise ValueError(f"{where}: unknown statistics {unknown}; expected {list(STAT_KEYS)}")
        arrays = {k: np.asarray(data[k], dtype=np.float64).reshape(-1) for k in STAT_KEYS}
        dims = {a.shape[0] for a in arrays.values()}
        if len(dims) != 1:
            raise ValueError(f"{where}: statistics have different lengths {sorted(dims)}")
        if any(not np.all(np.isfinite(a)) for a in arrays.values()):
            raise ValueError(f"{where}: statistics must be finite")
        return cls(**arrays)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in STAT_KEYS}

    @classmethod
    def identity(cls, dim: int) -> FeatureStats:
        """Statistics under which min_max and mean_std are the identity on [-1, 1]."""
        ones = np.ones(dim)
        return cls(
            min=-ones, max=ones.copy(), mean=np.zeros(dim), std=ones.copy(), q01=-ones.copy(), q99=ones.copy()
        )

    @classmethod
    def compute(cls, data: np.ndarray) -> FeatureStats:
        """Statistics of samples [N, D]."""
        x = np.asarray(data, dtype=np.float64).reshape(-1, data.shape[-1])
        return cls(
            min=x.min(0),
            max=x.max(0),
            mean=x.mean(0),
            std=x.std(0),
            q01=np.quantile(x, 0.01, axis=0),
            q99=np.quantile(x, 0.99, axis=0),
        )


class Normalizer:
    """Normalise state on the way in, unnormalise actions on the way out. Works on numpy and torch."""

    def __init__(self, stats: dict[str, FeatureStats], config: NormalizationConfig | None = None) -> None:
        self.stats = stats
        self.config = config or NormalizationConfig()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def identity(
        cls, state_dim: int = 16, action_dim: int = 16, config: NormalizationConfig | None = None
    ) -> Normalizer:
        return cls(
            {"state": FeatureStats.identity(state_dim), "action": FeatureStats.identity(action_dim)}, config
        )

    @classmethod
    def from_json(cls, path: str | Path, config: NormalizationConfig | None = None) -> Normalizer:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read statistics ({exc})") from exc
        if not isinstance(data, dict) or "state" not in data or "action" not in data:
            raise ValueError(f"{path}: expected an object with 'state' and 'action' statistics")
        stats = {k: FeatureStats.from_dict(v, f"{path}:{k}") for k, v in data.items()}
        return cls(stats, config)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({k: v.to_dict() for k, v in self.stats.items()}, indent=1))

    # ---- per-dimension affine maps ----------------------------------------------------------------
    def _modes(self, key: str, dim: int) -> list[str]:
        explicit = {"state": self.config.state_modes, "action": self.config.action_modes}.get(key, ())
        if explicit:
            return [explicit[i] if i < len(explicit) else "identity" for i in range(dim)]
        modes = []
        for i in range(dim):
            mode = self.config.extra
            for group, sl in GROUP_SLICES.items():
                if sl.start <= i < sl.stop:
                    mode = getattr(self.config, group)
            modes.append(mode)
        return modes

    def _affine(self, key: str, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offset, scale, clipped) with normalised = (x - offset) / scale for the first ``dim`` dims;
        ``clipped`` marks the dims kept to [-1, 1] (min_max with config.clip, and q99 always)."""
        if key not in self.stats:
            raise KeyError(f"no statistics for {key!r}; have {sorted(self.stats)}")
        s = self.stats[key]
        if dim > s.dim and key != "action":
            raise ValueError(f"{key} has {dim} dims but statistics cover {s.dim}")
        lo, hi = (s.q01, s.q99) if self.config.use_quantiles else (s.min, s.max)
        offset, scale, mm = np.zeros(dim), np.ones(dim), np.zeros(dim, dtype=bool)
        # action dims past the statistics are the reference decoder's padding: they pass through
        for i, mode in enumerate(self._modes(key, min(dim, s.dim))):
            if mode in ("min_max", "q99"):  # q99: GR00T's [q01, q99] -> [-1, 1], clipped
                a, b = (lo[i], hi[i]) if mode == "min_max" else (s.q01[i], s.q99[i])
                # a constant dim normalises to 0 rather than dividing by ~0
                offset[i], scale[i] = (a + b) / 2, max((b - a) / 2, self.config.eps)
                mm[i] = self.config.clip or mode == "q99"
                if b - a < self.config.eps:
                    offset[i] = a
            elif mode == "mean_std":
                offset[i], scale[i] = s.mean[i], s.std[i] + self.config.eps
        return offset, scale, mm

    def normalize(self, key: str, x: Array) -> Array:
        """Raw [..., D] -> normalised [..., D] (min_max dims clipped to [-1, 1] when config.clip, q99 dims
        always)."""
        offset, scale, mm = self._affine(key, x.shape[-1])
        y = (x - _like(offset, x)) / _like(scale, x)
        return self._clip(y, mm)

    def unnormalize(self, key: str, y: Array) -> Array:
        """Normalised [..., D] -> raw [..., D] (clipped dims to [-1, 1] first, as in normalize)."""
        offset, scale, mm = self._affine(key, y.shape[-1])
        return self._clip(y, mm) * _like(scale, y) + _like(offset, y)

    def _clip(self, y: Array, mm: np.ndarray) -> Array:
        if not mm.any():
            return y
        lo = np.where(mm, -1.0, -np.inf)
        hi = np.where(mm, 1.0, np.inf)
        if isinstance(y, torch.Tensor):
            return torch.clamp(y, _like(lo, y), _like(hi, y))
        return np.clip(y, lo, hi).astype(y.dtype, copy=False)

    # ---- processor-style entry points ------------------------------------------------------------
    def normalize_state(self, state: Array) -> Array:
        return self.normalize("state", state)

    def normalize_action(self, action: Array) -> Array:
        return self.normalize("action", action)

    def unnormalize_action(self, action: Array) -> Array:
        return self.unnormalize("action", action)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Normalise the ``state`` and ``action`` entries of a batch dict; other entries pass through."""
        out = dict(batch)
        for key in ("state", "action"):
            if key in out and out[key] is not None:
                out[key] = self.normalize(key, out[key])
        return out


def _like(a: np.ndarray, ref: Array) -> Array:
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
    return a.astype(ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64)
