"""``kv_cache_expert``: the Alpamayo-R1-style action expert.

A transformer configured like the LLM (the backbone's Qwen3 config: one layer per built LLM layer, same
heads / KV heads / head_dim / RoPE; widths from ``fusion_expert``, 0 = the LLM's) without token embeddings.
- ``action_in_proj``: x_t [B, T, max_action_dim] ++ Fourier features of t -> MLP -> [B, T, W];
  an optional ``state_proj`` token is prepended (the robot state is not in our VLM prompt).
- The suffix attends non-causally (all suffix tokens see each other) to the VLM's KV cache: the per-layer
  K/V of the causal VLM prefix, computed once per chunk. Each step appends its K/V to the cache and crops it
  back to the prefix length (``prompt_cache.crop(prefill_seq_len)``), so it never grows.
- ``action_out_proj``: [W -> action_dim].

Flow matching in the stack's (GR00T) convention with continuous t: ``x_t = (1 - t) noise + t action``,
target ``action - noise``, Euler from t = 0 to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.model.config import ModelConfig
from vla_policy.model.experts.layer_kv_expert import LayerKVExpert
from vla_policy.model.flow_matching import flow_matching_loss, interpolate, sample_time
from vla_policy.observation import PrefixOutput


def fourier_time_features(t: torch.Tensor, dim: int, max_frequency: float) -> torch.Tensor:
    """t [B] in [0, 1] -> [B, dim]: sin/cos of 2 pi f t for dim/2 log-spaced f in [1, max_frequency]."""
    freqs = torch.exp(
        torch.linspace(0.0, math.log(max_frequency), dim // 2, dtype=torch.float32, device=t.device)
    )
    x = 2 * math.pi * freqs[None] * t.float()[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class ActionInProjection(nn.Module):
    """Noisy actions + Fourier time features -> expert tokens: Linear -> SiLU -> Linear."""

    def __init__(self, action_dim: int, time_features: int, width: int, max_frequency: float) -> None:
        super().__init__()
        self.time_features = time_features
        self.max_frequency = max_frequency
        self.fc1 = nn.Linear(action_dim + time_features, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B, T, A], t [B] -> [B, T, width]."""
        b, horizon, _ = x_t.shape
        tf = fourier_time_features(t, self.time_features, self.max_frequency).to(x_t.dtype)
        return self.fc2(F.silu(self.fc1(torch.cat([x_t, tf[:, None].expand(b, horizon, -1)], dim=-1))))


class KVCacheExpert(LayerKVExpert):
    """Alpamayo-R1 expert over the VLM's (causal) per-layer KV cache (see the module docstring)."""

    causal_prefix = True  # the VLM's own causal attention produced the cache

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        fe = config.fusion_expert
        self.action_in_proj = ActionInProjection(
            config.action_head.max_action_dim, fe.time_features, self.width, fe.max_frequency
        )

    def embed_suffix(
        self, state_token: torch.Tensor | None, x_t: torch.Tensor, time_value: torch.Tensor
    ) -> torch.Tensor:
        """-> [B, S, W] = [state?, actions (T)]."""
        actions = self.action_in_proj(x_t, time_value)
        return torch.cat([state_token, actions], dim=1) if state_token is not None else actions

    def suffix_blocks(self, horizon: int, device: torch.device) -> torch.Tensor:
        """One block: the suffix is non-causal."""
        return torch.zeros(horizon + (self.state_proj is not None), dtype=torch.long, device=device)

    def compute_loss(
        self,
        prefix: PrefixOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_mask: torch.Tensor,
        embodiment_id: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """state [B, max_state_dim], actions/action_mask [B, T, max_action_dim] -> scalar masked
        velocity MSE (cached path when ``prefix.layer_kv`` is set, else the joint forward)."""
        self._check_embodiment(embodiment_id)
        h = self.config.action_head
        b = actions.shape[0]
        noise = torch.randn_like(actions)
        t = sample_time(b, h.noise_beta_alpha, h.noise_beta_beta, h.noise_s, actions.device).to(actions.dtype)
        x_t = interpolate(noise, actions, t)
        ctx = self.suffix_context(prefix, state, use_cache=prefix.layer_kv is not None)
        return flow_matching_loss(self.forward_velocity(prefix, ctx, x_t, t), noise, actions, action_mask)
