"""The inference worker a configuration asks for: one place that maps settings to a ``PolicySpec`` and a
worker kind (the node, offline evaluation and the simulation's closed loop all build theirs here)."""

from __future__ import annotations

import os
from pathlib import Path

from vla_policy.runtime.inference import InferenceWorker, PolicySpec
from vla_policy.runtime.settings import PolicySettings

WORKER_KINDS: tuple[str, ...] = ("process", "thread", "inline")


def policy_spec(settings: PolicySettings, checkpoint: str | Path) -> PolicySpec:
    """What a worker loads, from the settings (the RTC path is warmed when blending is rtc)."""
    return PolicySpec(
        checkpoint=str(checkpoint),
        device=settings.device,
        torch_threads=settings.torch_threads,
        backend_order=settings.backend_order,
        onnx_dir=settings.onnx_dir,
        engine_dir=settings.engine_dir,
        warmup_runs=settings.warmup_runs,
        warmup_rtc=settings.scheduler.blending == "rtc",
        state_dim=settings.joints.state_dim,
    )


def make_worker(kind: str, spec: PolicySpec, latency: float = 0.0) -> InferenceWorker:
    """``process`` (the default), ``thread`` (debugging) or ``inline`` (simulated ``latency`` seconds)."""
    # imported here: the process worker's parent never imports the model (transformers takes seconds)
    if kind == "process":
        from vla_policy.runtime.process_worker import ProcessWorker

        return ProcessWorker(spec)
    if kind == "thread":
        from vla_policy.runtime.thread_worker import ThreadWorker

        return ThreadWorker(spec)
    if kind == "inline":
        from vla_policy.runtime.inline_worker import InlineWorker

        return InlineWorker(spec, latency)
    raise ValueError(f"unknown worker kind {kind!r}; kinds: {', '.join(WORKER_KINDS)}")


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint directory (``path``, else ``$VLA_CHECKPOINT_DIR``) resolved and checked before
    anything is read from it: a directory holding ``config.json`` (``ValueError`` with the reason)."""
    path = path or os.environ.get("VLA_CHECKPOINT_DIR", "")
    if not path or "\x00" in path:
        raise ValueError("no checkpoint: set the parameter `checkpoint` or VLA_CHECKPOINT_DIR")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ValueError(f"{resolved}: checkpoint directory not found")
    if not resolved.is_dir():
        raise ValueError(f"{resolved}: a checkpoint must be a directory (with config.json and safetensors)")
    if not (resolved / "config.json").is_file():
        raise ValueError(f"{resolved}: not a checkpoint directory (no config.json)")
    return resolved
