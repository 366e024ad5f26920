"""``deep_fusion``: the PI0-style action expert.

Prefix (image + text) and suffix (state, noisy actions, time) run through joint attention at every layer.
The prefix side is the backbone's own cut Qwen3 (its layers, computed once per chunk with a bidirectional
prefix mask); the suffix side is this expert's Qwen3 layers, one per LLM layer, narrower if configured
(``fusion_expert.hidden_size``) but with the LLM's heads, KV heads and head_dim: one head space, one RoPE.

Suffix tokens (PI0): ``[state_token, action_tokens (T), time_token]``.
- state: ``state_proj`` [max_state_dim -> W]; actions: ``action_in_proj`` [max_action_dim -> W];
  time: PI0 sinusoid (periods 4e-3 .. 4) -> ``time_mlp_in`` -> SiLU -> ``time_mlp_out``.
- Masks (PI0 block-causal): the prefix is bidirectional and never sees the suffix; the state token sees
  the prefix and itself; the action and time tokens see the prefix, the state and each other.

Time convention (PI0): ``x_tau = tau * noise + (1 - tau) * action``, the expert predicts
``noise - action``; sampling runs ``num_inference_steps`` (10) Euler steps from tau = 1 to 0; training draws
tau = 0.999 * Beta(1.5, 1) + 0.001. The shared sampler runs in GR00T's t = 1 - tau with the velocity
negated, which gives the same iterates and lets RTC guidance work unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.model.config import ModelConfig
from vla_policy.model.experts.layer_kv_expert import LayerKVExpert
from vla_policy.model.flow_matching import flow_matching_loss
from vla_policy.observation import PrefixOutput


def pi0_time_embedding(time: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """PI0's sinusoidal time embedding: time [B] -> [B, dim] as [sin, cos] over log-spaced periods."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = (2 * math.pi / period).to(torch.float32)
    x = scaling[None] * time.float()[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


def sample_pi0_time(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Training tau [B] = 0.999 * Beta(1.5, 1) + 0.001 (PI0; tau = 1 is pure noise)."""
    beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0)).sample((batch,))
    return (beta * 0.999 + 0.001).to(device)


class DeepFusionExpert(LayerKVExpert):
    """PI0 deep fusion over the backbone LLM's per-layer K/V (see the module docstring)."""

    causal_prefix = False  # PI0's prefix is bidirectional

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        h = config.action_head
        self.action_in_proj = nn.Linear(h.max_action_dim, self.width)
        self.time_mlp_in = nn.Linear(config.fusion_expert.time_features, self.width)
        self.time_mlp_out = nn.Linear(self.width, self.width)

    def embed_suffix(
        self, state_token: torch.Tensor | None, x_t: torch.Tensor, time_value: torch.Tensor
    ) -> torch.Tensor:
        """-> [B, S, W] = [state?, actions (T), time]; time_value [B] is PI0's tau."""
        fe = self.config.fusion_expert
        actions = self.action_in_proj(x_t)
        emb = pi0_time_embedding(time_value, fe.time_features, fe.min_period, fe.max_period).to(x_t.dtype)
        time_token = self.time_mlp_out(F.silu(self.time_mlp_in(emb)))[:, None]
        parts = ([state_token] if state_token is not None else []) + [actions, time_token]
        return torch.cat(parts, dim=1)

    def suffix_blocks(self, horizon: int, device: torch.device) -> torch.Tensor:
        """state: block 1; actions and time: block 2 (bidirectional among themselves)."""
        blocks = [1] * (self.state_proj is not None) + [2] * (horizon + 1)
        return torch.tensor(blocks, dtype=torch.long, device=device)

    def model_time(self, t: float) -> float:
        return 1.0 - t  # PI0's tau from the sampler's t

    def velocity_sign(self) -> float:
        return -1.0  # PI0 predicts noise - action

    def compute_loss(
        self,
        prefix: PrefixOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_mask: torch.Tensor,
        embodiment_id: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """state [B, max_state_dim], actions/action_mask [B, T, max_action_dim] (normalised, padded) ->
        scalar masked MSE of the PI0 velocity ``noise - action``. Uses ``prefix.layer_kv`` when present,
        else the joint (uncached) forward, through which the LLM trains when ``tune_llm``."""
        self._check_embodiment(embodiment_id)
        b = actions.shape[0]
        noise = torch.randn_like(actions)
        tau = sample_pi0_time(b, actions.device).to(actions.dtype)
        x_t = tau[:, None, None] * noise + (1 - tau[:, None, None]) * actions
        ctx = self.suffix_context(prefix, state, use_cache=prefix.layer_kv is not None)
        v = self.forward_velocity(prefix, ctx, x_t, tau)
        # flow_matching_loss targets action - noise: the PI0 target is its negation
        return flow_matching_loss(-v, noise, actions, action_mask)
