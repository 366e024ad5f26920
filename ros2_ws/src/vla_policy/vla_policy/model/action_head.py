"""GR00T N1.5 flow-matching action head, the default ``dit_cross_attention`` expert.

Module names match GR00T's ``FlowmatchingActionHead`` so checkpoint keys map by name: ``vlln``,
``vl_self_attention``, ``state_encoder``, ``action_encoder.{W1,W2,W3}``, ``position_embedding``,
``future_tokens``, ``model`` (the DiT), ``action_decoder`` (reference layout) or
``shared_arm_decoder``/``action_arm_decoder`` + ``action_claw_decoder`` (split layout).

The reference layout is GR00T N1.5 exactly: attention biases, no VL attention mask (padding tokens are
attended to, as the reference does), one decoder whose predictions for the padded action dims feed back
through the action encoder, dropout 0.2 in training, N(0, 0.02) initialisation.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.model.config import ModelConfig
from vla_policy.model.decoders import CategorySpecificLinear, CategorySpecificMLP, build_decoders, decode
from vla_policy.model.dit import DiT, SelfAttentionTransformer
from vla_policy.model.flow_matching import (
    RTCTarget,
    euler_sample,
    flow_matching_loss,
    initial_noise,
    interpolate,
    sample_time,
    step_bucket,
)
from vla_policy.observation import PrefixOutput


def sinusoidal_encoding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """GR00T SinusoidalPositionalEncoding: timesteps [B, T] -> [B, T, dim] as [sin, cos]."""
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float32, device=timesteps.device) * (
        torch.log(torch.tensor(10000.0)) / half
    )
    freqs = timesteps.float().unsqueeze(-1) * exponent.exp()
    return torch.cat([torch.sin(freqs), torch.cos(freqs)], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    """W1(action) ++ sinusoid(t) -> swish(W2) -> W3, all per embodiment."""

    def __init__(self, action_dim: int, hidden: int, num_embodiments: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.hidden = hidden
        self.W1 = CategorySpecificLinear(num_embodiments, action_dim, hidden, init_std)
        self.W2 = CategorySpecificLinear(num_embodiments, 2 * hidden, hidden, init_std)
        self.W3 = CategorySpecificLinear(num_embodiments, hidden, hidden, init_std)

    def forward(self, actions: torch.Tensor, timesteps: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        """actions [B, T, max_action_dim], timesteps [B] long (discretised), cat_ids [B] -> [B, T, hidden]."""
        b, t, _ = actions.shape
        a_emb = self.W1(actions, cat_ids)
        tau = sinusoidal_encoding(timesteps[:, None].expand(b, t), self.hidden).to(a_emb.dtype)
        x = F.silu(self.W2(torch.cat([a_emb, tau], dim=-1), cat_ids))
        return self.W3(x, cat_ids)


class FlowMatchingActionHead(nn.Module):
    """The default action expert: DiT with cross-attention to the VL features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        h = config.action_head
        vl_dim = config.backbone.output_dim
        d = h.input_embedding_dim
        self.vlln = nn.LayerNorm(vl_dim)
        self.vl_self_attention = SelfAttentionTransformer(
            h.vl_self_attention_layers,
            vl_dim,
            h.vl_self_attention_heads,
            bias=h.attention_bias,
            dropout=h.dropout,
        )
        self.state_encoder = CategorySpecificMLP(
            h.num_embodiments, h.max_state_dim, h.hidden_size, d, h.init_std
        )
        self.action_encoder = MultiEmbodimentActionEncoder(h.max_action_dim, d, h.num_embodiments, h.init_std)
        if h.add_pos_embed:
            self.position_embedding = nn.Embedding(h.max_seq_len, d)
        self.future_tokens = nn.Embedding(h.num_future_tokens, d) if h.num_future_tokens else None
        if h.init_std > 0:  # GR00T draws both embeddings from N(0, 0.02)
            for emb in (getattr(self, "position_embedding", None), self.future_tokens):
                if emb is not None and emb.weight.device.type != "meta":
                    nn.init.normal_(emb.weight, 0.0, h.init_std)
        self.model = DiT(
            h.dit.num_layers,
            h.dit.num_attention_heads,
            h.dit.attention_head_dim,
            h.dit.output_dim,
            cross_attention_dim=vl_dim,
            interleave_self_attention=h.dit.interleave_self_attention,
            timestep_channels=h.dit.timestep_channels,
            eps=h.dit.norm_eps,
            ff_mult=h.dit.ff_mult,
            bias=h.attention_bias,
            dropout=h.dropout,
        )
        build_decoders(self, h.num_embodiments, h.dit.output_dim, config.decoder, h.action_dim, h.init_std)

    # ---- prefix ---------------------------------------------------------------------------------
    def prepare_prefix(
        self, backbone_features: torch.Tensor, attention_mask: torch.Tensor, with_cross_kv: bool = True
    ) -> PrefixOutput:
        """backbone_features [B, L, D_vl], mask [B, L] -> PrefixOutput (vlln, vl_self_attention, K/V).

        The mask travels in the PrefixOutput either way; it is applied only with ``use_vl_mask``."""
        mask = attention_mask.bool()
        features = self.vl_self_attention(self.vlln(backbone_features), mask=self._vl_mask(mask))
        cross_kv = self.model.project_cross_kv(features) if with_cross_kv else None
        return PrefixOutput(features=features, attention_mask=mask, cross_kv=cross_kv)

    def _vl_mask(self, mask: torch.Tensor) -> torch.Tensor | None:
        return mask if self.config.action_head.use_vl_mask else None

    # ---- denoiser -------------------------------------------------------------------------------
    def _cat_ids(
        self, embodiment_id: torch.Tensor | int | None, batch: int, device: torch.device
    ) -> torch.Tensor:
        if embodiment_id is None:
            embodiment_id = 0
        ids = torch.as_tensor(embodiment_id, dtype=torch.long, device=device).reshape(-1)
        if ids.numel() == 1:
            ids = ids.expand(batch)
        n = self.config.action_head.num_embodiments
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"embodiment_id must be in 0..{n - 1}, got {ids.tolist()}")
        return ids

    def encode_state(self, state: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        """state [B, max_state_dim] normalised -> [B, 1, D]."""
        return self.state_encoder(state[:, None, :], cat_ids)

    def dit_forward(
        self,
        prefix: PrefixOutput,
        state_features: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        cat_ids: torch.Tensor,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """x_t [B, T, max_action_dim], timesteps [B] long -> action-token output [B, T, dit.output_dim]."""
        b, t, _ = x_t.shape
        action_features = self.action_encoder(x_t, timesteps, cat_ids)
        if self.config.action_head.add_pos_embed:
            pos = torch.arange(t, device=x_t.device)
            action_features = action_features + self.position_embedding(pos)[None]
        parts = [state_features]
        if self.future_tokens is not None:
            parts.append(self.future_tokens.weight[None].expand(b, -1, -1))
        parts.append(action_features)
        sa_embs = torch.cat(parts, dim=1)
        cross_kv = prefix.cross_kv if use_cache else None
        out = self.model(
            sa_embs,
            timesteps,
            self._vl_mask(prefix.attention_mask),
            cross_kv=cross_kv,
            vl_features=prefix.features,
        )
        return out[:, -t:]

    def velocity(
        self,
        prefix: PrefixOutput,
        state_features: torch.Tensor,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        cat_ids: torch.Tensor,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Predicted velocity [B, T, action_dim] (every padded dim with the reference decoder)."""
        return decode(
            self, self.dit_forward(prefix, state_features, x_t, timesteps, cat_ids, use_cache), cat_ids
        )

    # ---- expert interface -----------------------------------------------------------------------
    def predict_chunk(
        self,
        prefix: PrefixOutput,
        state: torch.Tensor,
        noise: torch.Tensor | None = None,
        rtc: RTCTarget | None = None,
        *,
        embodiment_id: torch.Tensor | int | None = None,
        generator: torch.Generator | None = None,
        num_steps: int | None = None,
        use_cache: bool = True,
        timings: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Denoise one chunk. state [B, max_state_dim] normalised; noise [B, T, max_action_dim] (drawn from
        ``generator`` when None) -> normalised actions [B, T, action_dim] (split layout: [left 7, right 7,
        claw 2]; reference layout: all max_action_dim dims, the groups at ``config.action_layout``).

        ``rtc`` is the normalised, padded target (see :func:`flow_matching.make_rtc_target`);
        ``timings`` (optional) receives ``dit_step_k`` and ``decode`` seconds.
        """
        h = self.config.action_head
        b = state.shape[0]
        dtype, device = prefix.features.dtype, prefix.features.device
        noise = initial_noise(
            noise, rtc, (b, self.config.action_horizon, h.max_action_dim), generator, prefix.features
        )
        cat_ids = self._cat_ids(embodiment_id, b, device)
        state_features = self.encode_state(state.to(dtype), cat_ids)
        if use_cache and prefix.cross_kv is None:
            prefix = PrefixOutput(
                prefix.features,
                prefix.attention_mask,
                self.model.project_cross_kv(prefix.features),
                prefix.layer_kv,
            )

        steps = num_steps or self.config.num_inference_steps

        def velocity_fn(x_t: torch.Tensor, t: float, step: int) -> torch.Tensor:
            bucket = step_bucket(step, steps, h.num_timestep_buckets)
            ts = torch.full((b,), bucket, dtype=torch.long, device=device)
            if timings is None:
                return self.velocity(prefix, state_features, x_t, ts, cat_ids, use_cache)
            t0 = _now(device)
            out = self.dit_forward(prefix, state_features, x_t, ts, cat_ids, use_cache)
            t1 = _now(device)
            v = decode(self, out, cat_ids)
            t2 = _now(device)
            timings[f"dit_step_{step}"] = t1 - t0
            timings["decode"] = timings.get("decode", 0.0) + (t2 - t1)
            return v

        x1 = euler_sample(velocity_fn, noise, steps, rtc)
        return x1[..., : h.action_dim]

    def compute_loss(
        self,
        prefix: PrefixOutput,
        state: torch.Tensor,
        actions: torch.Tensor,
        action_mask: torch.Tensor,
        embodiment_id: torch.Tensor | int | None = None,
        noise: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """state [B, max_state_dim], actions/action_mask [B, T, max_action_dim] (normalised,
        padded) -> scalar masked velocity MSE. ``noise`` [B, T, max_action_dim] and ``t`` [B] are drawn
        when not given."""
        h = self.config.action_head
        b = actions.shape[0]
        device = actions.device
        cat_ids = self._cat_ids(embodiment_id, b, device)
        if noise is None:
            noise = torch.randn_like(actions)
        if t is None:
            t = sample_time(b, h.noise_beta_alpha, h.noise_beta_beta, h.noise_s, device)
        t = t.to(device=device, dtype=actions.dtype)
        x_t = interpolate(noise, actions, t)
        ts = (t * h.num_timestep_buckets).long()
        v = self.velocity(prefix, self.encode_state(state, cat_ids), x_t, ts, cat_ids, use_cache=False)
        return flow_matching_loss(v, noise, actions, action_mask)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
