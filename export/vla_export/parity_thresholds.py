"""Accuracy gates for exported graphs, in one place. A breach fails ``vla-export parity``.

fp32 must match torch to numerical noise; reduced precision is held to a cosine gate, as in
Isaac-GR00T's deployment checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Threshold:
    min_cosine: float
    max_abs: float | None


THRESHOLDS: dict[str, Threshold] = {
    "fp32": Threshold(min_cosine=0.99999, max_abs=1e-4),
    "fp16": Threshold(min_cosine=0.999, max_abs=None),
    "bf16": Threshold(min_cosine=0.999, max_abs=None),
}


@dataclass(frozen=True)
class Comparison:
    name: str
    cosine: float
    max_abs: float
    rel_error: float
    passed: bool


def compare(name: str, reference: torch.Tensor, candidate: torch.Tensor, precision: str) -> Comparison:
    """Cosine similarity, max abs and relative (L2) error of ``candidate`` against ``reference``."""
    if tuple(reference.shape) != tuple(candidate.shape):
        return Comparison(name, float("nan"), float("inf"), float("inf"), False)
    ref = reference.detach().double().flatten().cpu()
    cand = candidate.detach().double().flatten().cpu()
    if not bool(torch.isfinite(cand).all()):
        return Comparison(name, float("nan"), float("inf"), float("inf"), False)
    denom = ref.norm() * cand.norm()
    cosine = 1.0 if float(denom) == 0.0 else float(ref @ cand / denom)
    max_abs = float((ref - cand).abs().max()) if ref.numel() else 0.0
    rel = float((ref - cand).norm() / ref.norm().clamp_min(1e-12))
    gate = THRESHOLDS[precision]
    passed = cosine >= gate.min_cosine and (gate.max_abs is None or max_abs <= gate.max_abs)
    return Comparison(name, cosine, max_abs, rel, passed)
