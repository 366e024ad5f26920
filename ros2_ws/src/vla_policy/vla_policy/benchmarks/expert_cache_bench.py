"""K/V cache against recomputing the prefix in every denoising step, for several experts in one run.

For each preset: a random-init policy, then ``policy_bench.run_bench``'s side-by-side measurement of
``predict_chunk`` with the cache (prefix K/V computed once per chunk, included in the time) and without it
(``dit_cross_attention``: cross K/V projected in every step; ``deep_fusion`` / ``kv_cache_expert``: the
LLM prefix recomputed jointly with the suffix in every step). The ratio is uncached / cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset


def expert_cache_bench(
    presets: Sequence[str], reps: int = 20, warmup: int = 2, seed: int = 0, device: str = "cpu"
) -> dict[str, Any]:
    """-> {"experts": {preset: {"expert", "steps", "cached_ms", "uncached_ms", "speedup"}}, ...}."""
    from vla_policy.benchmarks.policy_bench import run_bench

    results: dict[str, Any] = {}
    for name in presets:
        config = get_preset(name.strip())
        policy = VLAPolicy(config, device=device, seed=seed)
        data = run_bench(policy, reps, warmup, seed)
        kv = data["kv_cache"]
        results[config.name] = {
            "expert": config.expert,
            "steps": config.num_inference_steps,
            "cached_ms": kv["cached"]["median_ms"],
            "uncached_ms": kv["uncached"]["median_ms"],
            "speedup": kv["speedup"],
        }
    return {"device": device, "reps": reps, "torch_threads": torch.get_num_threads(), "experts": results}


def format_expert_cache_bench(data: dict[str, Any]) -> str:
    lines = [f"K/V cache vs recomputing the prefix every step ({data['device']}, reps {data['reps']}):"]
    for name, r in data["experts"].items():
        lines.append(
            f"  {name:<14} {r['expert']:<20} {r['steps']:>2} steps  cached {r['cached_ms']:8.3f} ms  "
            f"uncached {r['uncached_ms']:8.3f} ms  speed-up x{r['speedup']}"
        )
    return "\n".join(lines)
