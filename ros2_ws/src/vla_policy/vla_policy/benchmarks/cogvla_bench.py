"""Prefix tokens and prefix latency: CogVLA aggregation + pruning against the baseline, in one run.

``python -m vla_policy.benchmarks.cogvla_bench --preset tiny-seed --reps 50`` builds the baseline preset
and the same preset with aggregation tokens and LLM pruning on, then times ``encode_prefix`` (vision +
LLM + VL head, eager torch) for both, interleaved rep by rep so drift in the machine's load hits both
alike. CogVLA works on SigLIP's patch tokens, so the baseline is a preset with the seed's projector
(``tiny-seed``; ``tiny`` has Eagle's pixel shuffle).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from vla_policy.latency_stats import ratio, summarize
from vla_policy.model.cogvla.backbone import token_counts
from vla_policy.model.cogvla.config import CogVLAConfig
from vla_policy.model.config import ModelConfig
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation


def cogvla_variant(base: ModelConfig, aggregation: int, layers: tuple[int, ...], keep: float) -> ModelConfig:
    """``base`` with aggregation tokens and pruning (keep ratio halving per layer from ``keep``)."""
    ratios = tuple(keep / (2**i) for i in range(len(layers)))
    cog = CogVLAConfig(aggregation_tokens=aggregation, prune_layers=layers, prune_keep_ratios=ratios)
    return dataclasses.replace(
        base, name=f"{base.name}+agg+prune", backbone=dataclasses.replace(base.backbone, cogvla=cog)
    )


def run(
    preset: str, reps: int, warmup: int, aggregation: int, layers: tuple[int, ...], keep: float, device: str
) -> dict[str, Any]:
    base = get_preset(preset)
    configs = {"baseline": base, "cogvla": cogvla_variant(base, aggregation, layers, keep)}
    policies = {k: VLAPolicy(c, device=device, seed=0) for k, c in configs.items()}
    bb = base.backbone
    obs = synthetic_observation(
        bb.cameras, bb.vision.image_size, 16, seed=0, instruction="pick up the red cube"
    )
    samples: dict[str, list[float]] = {k: [] for k in policies}
    with torch.inference_mode():
        for i in range(warmup + reps):
            for name, policy in policies.items():
                t0 = policy.clock()
                policy.encode_prefix([obs])
                if i >= warmup:
                    samples[name].append(policy.clock() - t0)
    text_tokens = len(policies["baseline"].tokenizer.encode(obs.instruction))
    return {
        "preset": preset,
        "device": device,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "cogvla": dataclasses.asdict(configs["cogvla"].backbone.cogvla),
        "tokens": {k: token_counts(c.backbone, text_tokens) for k, c in configs.items()},
        "latency_ms": {k: summarize(v).as_ms() for k, v in samples.items()},
        "speedup_median": ratio(samples["baseline"], samples["cogvla"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny-seed")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--aggregation", type=int, default=0, help="tokens per image; 0: patches / 4")
    p.add_argument("--prune-layers", type=int, nargs="*", default=None, help="default: 1/4 of the LLM")
    p.add_argument("--keep", type=float, default=0.5, help="keep ratio at the first pruning layer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    base = get_preset(args.preset)
    agg = args.aggregation or max(1, base.backbone.vision.num_patches // 4)
    layers = args.prune_layers
    if layers is None:
        layers = [max(1, base.backbone.language.select_layer // 4)]
    start = time.perf_counter()
    out = run(args.preset, args.reps, args.warmup, agg, tuple(layers), args.keep, args.device)
    out["wall_s"] = round(time.perf_counter() - start, 1)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
