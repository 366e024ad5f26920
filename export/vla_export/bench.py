"""Prefix speed of each backend against eager torch, measured side by side in one run.

The backends run interleaved on the same inputs (the order alternates each repetition), so machine
noise hits them alike and only the ratios are meaningful on a shared CPU.
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import torch
from vla_policy.backends.prefix_backend import PrefixBackend, TorchPrefixBackend, select_prefix_backend
from vla_policy.latency_stats import ratio, summarize
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import synthetic_observation

STAGES = ("vision", "llm", "vl_head", "prefix")


def _time_prefix(
    policy: VLAPolicy, backend: PrefixBackend, inputs: dict[str, torch.Tensor]
) -> dict[str, float]:
    mask = inputs["attention_mask"]
    t0 = policy.clock()
    vit = backend.vision(inputs["pixel_values"])
    t1 = policy.clock()
    features = backend.language(inputs["input_ids"], mask, vit)
    t2 = policy.clock()
    backend.vl_head(features, mask)
    t3 = policy.clock()
    return {"vision": t1 - t0, "llm": t2 - t1, "vl_head": t3 - t2, "prefix": t3 - t0}


def run_bench(
    checkpoint: Path,
    artifacts: Path | None,
    backends: tuple[str, ...] = ("onnxruntime",),
    engines: Path | None = None,
    reps: int = 30,
    warmup: int = 3,
    device: str = "cpu",
) -> dict[str, Any]:
    """Median/p99 per stage for torch and each available backend, with ratios against torch."""
    policy = VLAPolicy.from_checkpoint(checkpoint, device=device)
    bb = policy.config.backbone
    obs = synthetic_observation(bb.cameras, bb.vision.image_size, history=bb.history_frames)
    inputs = policy.prepare_inputs([obs])
    runners: dict[str, PrefixBackend] = {"torch": TorchPrefixBackend(policy)}
    skipped: dict[str, str] = {}
    for name in backends:
        try:
            runners[name] = select_prefix_backend(policy, [name], artifacts=artifacts, engines=engines)
        except RuntimeError as exc:
            skipped[name] = str(exc)
    samples: dict[str, dict[str, list[float]]] = {n: {s: [] for s in STAGES} for n in runners}
    names = list(runners)
    with torch.inference_mode():
        for i in range(warmup + reps):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                timings = _time_prefix(policy, runners[name], inputs)
                if i >= warmup:
                    for stage, value in timings.items():
                        samples[name][stage].append(value)
    results = {n: {s: summarize(v).as_ms() for s, v in stages.items()} for n, stages in samples.items()}
    ratios = {
        n: {s: ratio(samples["torch"][s], samples[n][s]) for s in STAGES} for n in samples if n != "torch"
    }
    return {
        "policy": policy.name,
        "device": device,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "cameras": len(bb.cameras),
        "tokens": int(inputs["input_ids"].shape[1]),
        "reps": reps,
        "results": results,
        "ratios_vs_torch": ratios,
        "skipped": skipped,
    }


def markdown_table(data: dict[str, Any], command: str) -> str:
    """A benchmarks.md section: the command, then median/p99 per stage and the ratio against torch."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Prefix backends, {data['policy']} ({data['device']}, {data['machine']}), {stamp}",
        "",
        f"Command: `{command}`",
        "",
        f"{data['cameras']} cameras, {data['tokens']} tokens, {data['reps']} repetitions, interleaved.",
        "",
        "| backend | stage | median ms | p99 ms | ratio vs torch (median) |",
        "|---|---|---|---|---|",
    ]
    for name, stages in data["results"].items():
        for stage, s in stages.items():
            r = "1.0" if name == "torch" else f"{data['ratios_vs_torch'][name][stage]:.2f}x"
            lines.append(f"| {name} | {stage} | {s['median_ms']:.3f} | {s['p99_ms']:.3f} | {r} |")
    for name, why in data["skipped"].items():
        lines.append(f"\n{name} skipped: {why}")
    return "\n".join(lines) + "\n"
