"""The inference worker a configuration asks for: one place that maps settings to a ``PolicySpec`` and a
worker kind (the node, offline evaluation and the simulation's closed loop all build theirs here)."""

from __future__ import annotations

from pathlib import Path

from vla_policy.runtime.inference import InferenceWorker, PolicySpec
from vla_policy.runtime.inline_worker import InlineWorker
from vla_policy.runtime.process_worker import ProcessWorker
from vla_policy.runtime.settings import PolicySettings
from vla_policy.runtime.thread_worker import ThreadWorker

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
    if kind == "process":
        return ProcessWorker(spec)
    if kind == "thread":
        return ThreadWorker(spec)
    if kind == "inline":
        return InlineWorker(spec, latency)
    raise ValueError(f"unknown worker kind {kind!r}; kinds: {', '.join(WORKER_KINDS)}")
