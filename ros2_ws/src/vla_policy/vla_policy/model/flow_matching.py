"""Flow matching in GR00T's convention, the Euler sampler and real-time-chunking (RTC) guidance.

Convention: ``x_t = (1 - t) * noise + t * action``; t = 0 is pure noise, t = 1 the action. The model
predicts the velocity ``action - noise``. Inference integrates K Euler steps from t = 0 to t = 1; the
model sees ``t`` discretised into ``num_timestep_buckets`` (1000) buckets.

Action space: the expert works in the padded space of ``max_action_dim`` (32). Its decoders predict the
velocity of the first ``action_dim`` (16) dims, laid out ``[left 7, right 7, claw 2]``; the padded dims
always hold action 0, so their velocity is known exactly (``-noise``) and is filled in analytically. This
keeps x_t in every padded dim on the same straight path as in training.

RTC (Black et al. 2025, "Real-Time Execution of Action Chunking Flow Policies"): the previous chunk's
remaining actions are normalised, padded to ``max_action_dim`` with zeros (the inverse of the decoder
layout: dims 0..15 = [left 7, right 7, claw 2], 16.. = 0) and used as the inpainting target Y. The first
``frozen_steps`` actions are pinned to Y (on the straight path, exactly Y at t = 1); the next
``overlap_steps`` are guided toward Y with exponentially decaying weights; the rest are free. Guidance is
the vector-Jacobian product of the predicted clean action ``x_t + (1 - t) v`` with respect to ``x_t``,
scaled by ``min(beta, (1 - t) / (t r_t^2))``, ``r_t^2 = (1 - t)^2 / (t^2 + (1 - t)^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# (x_t [B, T, A] padded, t) -> velocity of the valid dims [B, T, action_dim]
VelocityFn = Callable[[torch.Tensor, float, int], torch.Tensor]


@dataclass(frozen=True)
class RTCGuidance:
    """Real-time chunking request, in robot units.

    previous: float [P, 16] unnormalised; row 0 is the first action of the new chunk (P <= T; rows past P
    are free). frozen_steps: actions pinned to ``previous`` (they run while inference is under way).
    overlap_steps: guided actions after the frozen ones, with exponentially decaying weights.
    max_guidance_weight: the clip ``beta`` of the guidance weight.
    """

    previous: np.ndarray
    frozen_steps: int
    overlap_steps: int
    max_guidance_weight: float = 5.0

    def __post_init__(self) -> None:
        prev = np.asarray(self.previous)
        if prev.ndim != 2:
            raise ValueError(f"RTCGuidance.previous must be [T, D], got shape {prev.shape}")
        if self.frozen_steps < 0 or self.overlap_steps < 0:
            raise ValueError("RTCGuidance frozen_steps and overlap_steps must be >= 0")
        if self.max_guidance_weight < 0:
            raise ValueError("RTCGuidance.max_guidance_weight must be >= 0")


@dataclass(frozen=True)
class RTCTarget:
    """RTC in the expert's space: target [B, T, A] normalised and padded; weights [T] in [0, 1]."""

    target: torch.Tensor
    weights: torch.Tensor
    frozen_steps: int
    max_guidance_weight: float


def rtc_weights(horizon: int, frozen: int, overlap: int, available: int) -> torch.Tensor:
    """[T] soft mask: 1 on the frozen steps, c (e^c - 1) / (e - 1) decaying over the overlap, 0 after
    (and 0 past the ``available`` previous actions)."""
    w = torch.zeros(horizon)
    for i in range(min(horizon, available)):
        if i < frozen:
            w[i] = 1.0
        elif i < frozen + overlap:
            c = 1.0 - (i - frozen + 1) / (overlap + 1)
            w[i] = c * (math.exp(c) - 1.0) / (math.e - 1.0)
    return w


def make_rtc_target(
    rtc: RTCGuidance,
    normalize_action: Callable[[np.ndarray], np.ndarray],
    horizon: int,
    max_action_dim: int,
    batch: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RTCTarget:
    """Normalise ``rtc.previous`` [P, 16] and map it into the padded action space [B, T, max_action_dim]."""
    prev = np.asarray(rtc.previous, dtype=np.float32)[:horizon]
    norm = normalize_action(prev)
    target = torch.zeros(batch, horizon, max_action_dim, dtype=dtype, device=device)
    target[:, : norm.shape[0], : norm.shape[1]] = torch.as_tensor(norm, dtype=dtype, device=device)
    frozen = min(rtc.frozen_steps, prev.shape[0])
    weights = rtc_weights(horizon, frozen, rtc.overlap_steps, prev.shape[0]).to(device=device, dtype=dtype)
    return RTCTarget(
        target=target, weights=weights, frozen_steps=frozen, max_guidance_weight=rtc.max_guidance_weight
    )


def sample_time(
    batch: int, alpha: float = 1.5, beta: float = 1.0, s: float = 0.999, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Training timesteps [B], GR00T's ``(s - u) / s`` with u ~ Beta(alpha, beta).

    That is Beta(1.5, 1) scaled by s = 0.999 measured from the action end: it favours the noisier t,
    where the velocity is hardest to predict. Clamped to [0, 1) so the bucket index stays in range.
    """
    u = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta)).sample((batch,))
    return ((s - u) / s).clamp(0.0, 0.999).to(device)


def interpolate(noise: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * noise + t * action; t [B] broadcast over [B, T, A]."""
    t = t.view(-1, *([1] * (actions.ndim - 1)))
    return (1 - t) * noise + t * actions


def flow_matching_loss(
    pred_velocity: torch.Tensor, noise: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor
) -> torch.Tensor:
    """Masked MSE of the velocity over the valid dims.

    pred_velocity [B, T, action_dim]; noise, actions, action_mask [B, T, max_action_dim] -> scalar.
    """
    d = pred_velocity.shape[-1]
    target = (actions - noise)[..., :d]
    mask = action_mask[..., :d].to(pred_velocity.dtype)
    se = (pred_velocity - target) ** 2 * mask
    return se.sum() / mask.sum().clamp_min(1.0)


def full_velocity(v_valid: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Velocity in the padded space: predicted valid dims, then the exact ``0 - noise`` of the padding."""
    d = v_valid.shape[-1]
    return torch.cat([v_valid, -noise[..., d:]], dim=-1)


def step_bucket(step: int, num_steps: int, buckets: int) -> int:
    """Timestep bucket of Euler step ``step`` of ``num_steps``: GR00T's ``int(step / N * buckets)``.

    ``step / N`` is not always ``step * (1 / N)`` in floating point (N = 35, 55, 70, 95 ... differ by
    one bucket at some steps), so the step index, not the accumulated t, is the input."""
    return min(int(step / float(num_steps) * buckets), buckets - 1)


def rtc_guidance_weight(t: float, beta: float) -> float:
    """min(beta, (1 - t) / (t r^2)) with r^2 = (1 - t)^2 / (t^2 + (1 - t)^2); beta at t = 0."""
    if t <= 0.0:
        return beta
    if t >= 1.0:
        return beta
    r2 = (1 - t) ** 2 / (t**2 + (1 - t) ** 2)
    return min(beta, (1 - t) / (t * r2))


def initial_noise(
    noise: torch.Tensor | None,
    rtc: RTCTarget | None,
    shape: tuple[int, int, int],
    generator: torch.Generator | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """The starting noise [B, T, max_action_dim] of an expert's sampler: ``noise`` checked against
    ``shape``, or drawn from ``generator`` on ``like``'s device and dtype. Also refuses an ``rtc`` that
    is not already an RTCTarget, because the experts work in normalised space."""
    if rtc is not None and not isinstance(rtc, RTCTarget):
        raise TypeError(
            "the expert works in normalised space: pass an RTCTarget from "
            "flow_matching.make_rtc_target (VLAPolicy.predict_chunk does this for RTCGuidance)"
        )
    if noise is None:
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise must be [B, T, max_action_dim] = {list(shape)}, got {list(noise.shape)}")
    return noise


def euler_sample(
    velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int, rtc: RTCTarget | None = None
) -> torch.Tensor:
    """Integrate from x_0 = noise [B, T, A] to x_1 with ``num_steps`` Euler steps -> [B, T, A].

    ``velocity_fn(x_t, t, step)`` returns the velocity of the predicted dims (all of them with the
    reference decoder, whose padded dims feed back as GR00T's do; the first ``action_dim`` with the split
    one). With ``rtc`` the steps are guided and the frozen actions pinned (needs autograd: do not call
    under ``torch.inference_mode``).
    """
    dt = 1.0 / num_steps
    x = noise
    if rtc is not None:
        x = _pin(x, noise, rtc, 0.0)
    for k in range(num_steps):
        t = k * dt
        if rtc is None:
            v = full_velocity(velocity_fn(x, t, k), noise)
        else:
            v = _guided_velocity(velocity_fn, x, t, k, noise, rtc)
        x = x + dt * v
        if rtc is not None:
            x = _pin(x, noise, rtc, t + dt)
    return x


def _pin(x: torch.Tensor, noise: torch.Tensor, rtc: RTCTarget, t: float) -> torch.Tensor:
    """Frozen steps follow the straight path to the target, so at t = 1 they equal it exactly."""
    f = rtc.frozen_steps
    if f == 0:
        return x
    x = x.clone()
    x[:, :f] = rtc.target[:, :f] if t >= 1.0 else (1 - t) * noise[:, :f] + t * rtc.target[:, :f]
    return x


def _guided_velocity(
    velocity_fn: VelocityFn, x: torch.Tensor, t: float, step: int, noise: torch.Tensor, rtc: RTCTarget
) -> torch.Tensor:
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        v = full_velocity(velocity_fn(x_in, t, step), noise)
        clean = x_in + (1 - t) * v  # predicted x_1 (the action) in GR00T's convention
        err = (rtc.target - clean.detach()) * rtc.weights.view(1, -1, 1)
        (grad,) = torch.autograd.grad(clean, x_in, grad_outputs=err)
    return v.detach() + rtc_guidance_weight(t, rtc.max_guidance_weight) * grad
