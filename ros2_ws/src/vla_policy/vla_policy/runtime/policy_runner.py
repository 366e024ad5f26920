"""The model-running code of every inference worker: load, warm up, describe, serve.

``ProcessWorker`` runs a ``PolicyRunner`` in its child process, ``ThreadWorker`` in a thread and
``InlineWorker`` in the caller, so loading, warm-up and the checks on a chunk exist once.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from vla_policy.model.flow_matching import RTCGuidance
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import synthetic_observation
from vla_policy.runtime.inference import (
    InferenceRequest,
    InferenceResult,
    ModelInfo,
    PolicySpec,
    WorkerFailure,
    one_line,
)

logger = logging.getLogger(__name__)

WARMUP_SEED = 0


class PolicyRunner:
    """A loaded, warm policy and what the runtime needs to know about it (``info``)."""

    def __init__(self, policy: VLAPolicy, info: ModelInfo) -> None:
        self.policy = policy
        self.info = info

    @classmethod
    def load(cls, spec: PolicySpec) -> PolicyRunner:
        """Load ``spec.checkpoint``, pick the prefix backend, warm up. ``WorkerFailure`` (one line) on
        any failure: a missing or corrupt checkpoint, no backend that loads, a warm-up that fails."""
        if spec.torch_threads > 0:
            torch.set_num_threads(spec.torch_threads)
        try:
            policy = VLAPolicy.from_checkpoint(spec.checkpoint, device=spec.device)
            backend = policy.use_prefix_backend(
                spec.backend_order, spec.onnx_dir or None, spec.engine_dir or None
            )
        except Exception as exc:  # any load error becomes the worker's one-line reason
            raise WorkerFailure(one_line(f"cannot load checkpoint '{spec.checkpoint}': {exc}")) from exc
        cfg = policy.config
        try:
            warmup_s, width = cls._warm_up(policy, spec)
        except Exception as exc:
            raise WorkerFailure(one_line(f"warm-up inference failed: {exc}")) from exc
        if width != cfg.action_width:
            raise WorkerFailure(f"the policy returns {width} action dims, its config says {cfg.action_width}")
        info = ModelInfo(
            name=policy.name,
            cameras=tuple(cfg.backbone.cameras),
            image_size=cfg.backbone.vision.image_size,
            history_frames=cfg.backbone.history_frames,
            horizon=cfg.action_horizon,
            dt=float(cfg.dt),
            max_state_dim=cfg.action_head.max_state_dim,
            action_dim=cfg.action_width,
            action_layout=cfg.action_layout,
            backend=backend,
            backend_skipped=tuple(one_line(r) for r in policy.prefix_backend.skipped),
            warmup_s=warmup_s,
        )
        logger.info(
            "loaded %s: backend %s, %d actions x %d every %.3f s, warm-up %.3f s",
            info.name,
            info.backend,
            info.horizon,
            info.action_dim,
            info.dt,
            info.warmup_s,
        )
        return cls(policy, info)

    @staticmethod
    def _warm_up(policy: VLAPolicy, spec: PolicySpec) -> tuple[float, int]:
        """Run ``max(1, warmup_runs)`` chunks on a synthetic observation, and one RTC-guided chunk when
        ``warmup_rtc`` (the autograd path pays its own first-call costs) -> (seconds, action width)."""
        bb = policy.config.backbone
        obs = synthetic_observation(
            tuple(bb.cameras), bb.vision.image_size, spec.state_dim, bb.history_frames
        )
        t0 = time.perf_counter()
        result = policy.predict_chunk(obs, seed=WARMUP_SEED)
        for _ in range(spec.warmup_runs - 1):
            result = policy.predict_chunk(obs, seed=WARMUP_SEED)
        if spec.warmup_rtc:
            # the guidance values do not matter here: one step frozen, the rest guided
            horizon = result.actions.shape[0]
            guidance = RTCGuidance(result.actions, frozen_steps=1, overlap_steps=horizon - 1)
            policy.predict_chunk(obs, seed=WARMUP_SEED, rtc=guidance)
        return time.perf_counter() - t0, int(result.actions.shape[1])

    def serve(self, request: InferenceRequest) -> InferenceResult:
        """One chunk for ``request``. A model error or a non-finite action gives a result with a one-line
        ``error`` instead of raising: the worker stays up and the runtime decides what to do."""
        t0 = time.perf_counter()
        try:
            chunk = self.policy.predict_chunk(request.observation, seed=request.seed, rtc=request.rtc)
        except Exception as exc:  # bad observation, model failure: reported, never raised
            logger.warning("request %d failed: %s", request.request_id, exc, exc_info=True)
            return self._error(request, t0, f"inference failed: {type(exc).__name__}: {exc}")
        actions = np.ascontiguousarray(chunk.actions, dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(actions)))
        if bad:
            return self._error(request, t0, f"the chunk has {bad} non-finite values of {actions.size}")
        return InferenceResult(
            request_id=request.request_id,
            actions=actions,
            dt=chunk.dt,
            compute_s=time.perf_counter() - t0,
            timings=dict(chunk.timings),
        )

    def _error(self, request: InferenceRequest, t0: float, reason: str) -> InferenceResult:
        return InferenceResult(
            request_id=request.request_id,
            actions=None,
            dt=self.info.dt,
            compute_s=time.perf_counter() - t0,
            error=one_line(reason),
        )
