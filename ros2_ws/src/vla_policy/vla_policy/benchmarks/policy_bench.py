"""``vla-policy bench``: per-stage timings of one policy and its K/V cache speed-up, side by side."""

from __future__ import annotations

from typing import Any

import torch

from vla_policy.latency_stats import ratio, summarize
from vla_policy.observation import synthetic_observation


def _stats(samples: list[float]) -> dict[str, float | int]:
    return summarize(samples).as_ms()


def run_bench(policy: Any, reps: int, warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Per-stage timings over ``reps`` chunks, and the cross-attention K/V cache speed-up measured side by
    side (cached = K/V projected once per chunk + K steps; uncached = K/V recomputed in every step)."""
    cfg = policy.config
    obs = synthetic_observation(
        cfg.backbone.cameras, cfg.backbone.vision.image_size, 16, cfg.backbone.history_frames, seed=seed
    )
    stages: dict[str, list[float]] = {}
    cached: list[float] = []
    uncached: list[float] = []
    expert = policy.expert
    gen = torch.Generator(device=policy.device)
    for i in range(warmup + reps):
        res = policy.predict_chunk(obs, seed=seed + i)
        with torch.inference_mode():
            prefix, _ = policy.encode_prefix_timed([obs], with_cross_kv=False)
            state = policy.prepare_state([obs.state])
            gen.manual_seed(seed + i)
            noise = torch.randn(
                1,
                cfg.action_horizon,
                cfg.action_head.max_action_dim,
                generator=gen,
                device=policy.device,
                dtype=policy.dtype,
            )
            # alternate the order so drift (thermal, caches) does not favour one variant
            order = (True, False) if i % 2 == 0 else (False, True)
            for use_cache in order:
                t0 = policy.clock()
                p = prefix
                if use_cache and getattr(expert, "uses_layer_kv", False):  # per-LLM-layer K/V once
                    p = expert.prepare_prefix(prefix.features, prefix.attention_mask)
                elif use_cache:
                    p = type(prefix)(
                        prefix.features,
                        prefix.attention_mask,
                        expert.model.project_cross_kv(prefix.features),
                        None,
                    )
                expert.predict_chunk(p, state, noise, use_cache=use_cache)
                dt = policy.clock() - t0
                (cached if use_cache else uncached).append(dt)
        if i >= warmup:
            for k, v in res.timings.items():
                stages.setdefault(k, []).append(v)
    cached, uncached = cached[warmup:], uncached[warmup:]
    return {
        "policy": policy.name,
        "device": str(policy.device),
        "dtype": str(policy.dtype).replace("torch.", ""),
        "steps": cfg.num_inference_steps,
        "stages": {k: _stats(v) for k, v in stages.items()},
        "kv_cache": {
            "cached": _stats(cached),
            "uncached": _stats(uncached),
            "speedup": ratio(uncached, cached),
        },
        "torch_threads": torch.get_num_threads(),
    }
