"""Shared machinery of the layer-KV action experts (``deep_fusion``, ``kv_cache_expert``).

Both experts own a stack of Qwen3 decoder layers (``model.layers``, one per built LLM layer, heads /
KV heads / head_dim of the LLM so they share its head space and RoPE) whose suffix tokens attend at every
layer to the LLM's per-layer prefix K/V. The subclass decides the suffix tokens, their block mask, whether
the VLM prefix is causal, and the flow-matching time convention.

Prefix contract (``PrefixOutput``): ``features`` are the LLM's input embeddings [B, L, D_llm] (token
embeddings with the image tokens spliced in, :meth:`embed_prefix`), ``layer_kv`` the per-layer (K, V)
[B, kv_heads, L, head_dim] computed once per chunk by :meth:`prepare_prefix`. Without ``layer_kv`` (or
``use_cache=False``) every denoising step recomputes the prefix jointly with the suffix (the reference).

Action space: the suffix encodes the padded x_t [B, T, max_action_dim]; the output projection predicts
the velocity of the ``action_dim`` (16) valid dims ``[left 7, right 7, claw 2]``; :func:`euler_sample`
fills the padded dims analytically, so RTC works unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm

from vla_policy.model.config import ModelConfig
from vla_policy.model.flow_matching import RTCTarget, euler_sample, initial_noise
from vla_policy.model.llm_kv_cache import (
    PrefixKVCache,
    embed_prefix,
    joint_attention_mask,
    joint_forward,
    llm_prefix_kv,
    prefix_positions,
    rope_cos_sin,
    suffix_attention_mask,
    suffix_forward,
)
from vla_policy.observation import KVPairs, PrefixOutput


def expert_qwen3_config(config: ModelConfig) -> Qwen3Config:
    """The expert's layer config: the LLM's, with the expert widths (0 -> the LLM's)."""
    lm = config.backbone.language
    fe = config.fusion_expert
    return Qwen3Config(
        vocab_size=1,  # no token embeddings are built
        hidden_size=fe.hidden_size or lm.hidden_size,
        intermediate_size=fe.intermediate_size or lm.intermediate_size,
        num_hidden_layers=lm.select_layer,
        num_attention_heads=lm.num_attention_heads,
        num_key_value_heads=lm.num_key_value_heads,
        head_dim=lm.head_dim,
        max_position_embeddings=lm.max_position_embeddings,
        rms_norm_eps=fe.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": lm.rope_theta},
        use_cache=False,
        attn_implementation="sdpa",
    )


class ExpertTransformer(nn.Module):
    """A Qwen3 decoder without token embeddings: ``layers`` (one per LLM layer) and the final ``norm``."""

    def __init__(self, config: Qwen3Config) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Qwen3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


@dataclass
class SuffixContext:
    """What stays fixed across the denoising steps of one chunk (built once by :meth:`suffix_context`)."""

    state_token: torch.Tensor | None  # [B, 1, width]
    suffix_mask: torch.Tensor  # [B, S, L + S]
    joint_mask: torch.Tensor | None  # [B, L + S, L + S], only for the uncached path
    rope_suffix: tuple[torch.Tensor, torch.Tensor]  # cos, sin [B, S, hd]
    rope_prefix: tuple[torch.Tensor, torch.Tensor] | None  # only for the uncached path
    cache: PrefixKVCache | None


class LayerKVExpert(nn.Module):
    """Base class; subclasses set ``causal_prefix`` and implement the suffix and the time convention."""

    uses_layer_kv = True  # the policy, prefix backends and export read this
    causal_prefix = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        h = config.action_head
        qcfg = expert_qwen3_config(config)
        self.width = qcfg.hidden_size
        self.model = ExpertTransformer(qcfg)
        self.state_proj = nn.Linear(h.max_state_dim, self.width) if config.fusion_expert.state_token else None
        self.action_out_proj = nn.Linear(self.width, h.action_dim)
        self._backbone: tuple[nn.Module, ...] = ()  # not a submodule: its weights live under backbone.*

    # ---- wiring ---------------------------------------------------------------------------------
    def attach_backbone(self, backbone: nn.Module) -> None:
        """Give the expert the backbone whose LLM layers produce (and, uncached, recompute) the prefix."""
        self._backbone = (backbone,)

    @property
    def backbone(self) -> nn.Module:
        if not self._backbone:
            raise RuntimeError(
                f"expert '{self.config.expert}' needs the backbone's LLM: call attach_backbone() "
                "(VLAModel does this)"
            )
        return self._backbone[0]

    @property
    def llm(self) -> nn.Module:
        """The cut Qwen3 (``backbone.eagle_model.language_model.model``)."""
        return self.backbone.eagle_model.language_model.model

    # ---- prefix ---------------------------------------------------------------------------------
    def embed_prefix(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        """input_ids [B, L], attention_mask [B, L], vit_embeds [N, patches, D]
        -> LLM input embeds [B, L, D]."""
        return embed_prefix(self.backbone, input_ids, attention_mask, vit_embeds)

    def prefix_layer_kv(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> KVPairs:
        """embeds [B, L, D_llm], mask [B, L] -> per LLM layer (K, V) [B, kv_heads, L, head_dim]."""
        return llm_prefix_kv(self.llm, embeds, attention_mask.bool(), self.causal_prefix)[0]

    def prepare_prefix(
        self, features: torch.Tensor, attention_mask: torch.Tensor, with_cross_kv: bool = True
    ) -> PrefixOutput:
        """features = LLM input embeds [B, L, D_llm], mask [B, L] -> PrefixOutput with ``layer_kv`` (the
        per-layer prefix K/V, once per chunk) unless ``with_cross_kv`` is False (then recomputed per step)."""
        mask = attention_mask.bool()
        layer_kv = self.prefix_layer_kv(features, mask) if with_cross_kv else None
        return PrefixOutput(features=features, attention_mask=mask, layer_kv=layer_kv)

    # ---- subclass hooks -------------------------------------------------------------------------
    def embed_suffix(
        self, state_token: torch.Tensor | None, x_t: torch.Tensor, time_value: torch.Tensor
    ) -> torch.Tensor:
        """state_token [B, 1, W] | None, x_t [B, T, max_action_dim], time_value [B] (model convention)
        -> suffix tokens [B, S, W]."""
        raise NotImplementedError

    def suffix_blocks(self, horizon: int, device: torch.device) -> torch.Tensor:
        """[S] long block ids: suffix token i sees suffix token j iff blocks[j] <= blocks[i]."""
        raise NotImplementedError

    def action_offset(self) -> int:
        """Index of the first action token in the suffix."""
        return 1 if self.state_proj is not None else 0

    def model_time(self, t: float) -> float:
        """Sampler time (GR00T convention: 0 = noise, 1 = action) -> the time the expert is conditioned on."""
        return t

    def velocity_sign(self) -> float:
        """+1 when the expert predicts ``action - noise`` (GR00T), -1 for ``noise - action`` (PI0)."""
        return 1.0

    # ---- denoiser -------------------------------------------------------------------------------
    def _check_embodiment(self, embodiment_id: torch.Tensor | int | None) -> None:
        if embodiment_id is None:
            return
        ids = torch.as_tensor(embodiment_id).reshape(-1)
        n = self.config.action_head.num_embodiments
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"embodiment_id must be in 0..{n - 1}, got {ids.tolist()}")

    def suffix_context(
        self,
        prefix: PrefixOutput,
        state: torch.Tensor,
        use_cache: bool,
        kv_cache: PrefixKVCache | None = None,
    ) -> SuffixContext:
        """Masks, suffix RoPE, state token and the cache: everything that is fixed for one chunk."""
        mask = prefix.attention_mask.bool()
        device, dtype = prefix.features.device, prefix.features.dtype
        horizon = self.config.action_horizon
        blocks = self.suffix_blocks(horizon, device)
        s = blocks.shape[0]
        lm = self.config.backbone.language
        # suffix positions continue after the real prefix tokens (left padding does not count)
        pos_s = mask.long().sum(-1, keepdim=True) + torch.arange(s, device=device)[None]
        rope_s = rope_cos_sin(pos_s, lm.head_dim, lm.rope_theta, dtype)
        state_token = self.state_proj(state.to(dtype))[:, None] if self.state_proj is not None else None
        if use_cache:
            if kv_cache is None:
                layer_kv = prefix.layer_kv
                if layer_kv is None:
                    layer_kv = self.prefix_layer_kv(prefix.features, mask)
                kv_cache = PrefixKVCache(layer_kv)
            return SuffixContext(
                state_token, suffix_attention_mask(mask, blocks), None, rope_s, None, kv_cache
            )
        rope_p = rope_cos_sin(prefix_positions(mask), lm.head_dim, lm.rope_theta, dtype)
        return SuffixContext(
            state_token,
            suffix_attention_mask(mask, blocks),
            joint_attention_mask(mask, blocks, self.causal_prefix),
            rope_s,
            rope_p,
            None,
        )

    def forward_velocity(
        self, prefix: PrefixOutput, ctx: SuffixContext, x_t: torch.Tensor, time_value: torch.Tensor
    ) -> torch.Tensor:
        """The expert's raw output (its own convention). x_t [B, T, max_action_dim], time_value [B]
        -> [B, T, action_dim]."""
        suffix = self.embed_suffix(ctx.state_token, x_t, time_value)
        layers = list(self.model.layers)
        if ctx.cache is not None:
            out = suffix_forward(layers, suffix, ctx.cache, ctx.suffix_mask, *ctx.rope_suffix)
        else:
            assert ctx.joint_mask is not None and ctx.rope_prefix is not None
            out = joint_forward(
                list(self.llm.layers),
                layers,
                prefix.features,
                suffix,
                ctx.joint_mask,
                ctx.rope_prefix,
                ctx.rope_suffix,
            )
        start = self.action_offset()
        actions = self.model.norm(out[:, start : start + x_t.shape[1]])
        return self.action_out_proj(actions)

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
        kv_cache: PrefixKVCache | None = None,
    ) -> torch.Tensor:
        """Denoise one chunk. state [B, max_state_dim] normalised; noise [B, T, max_action_dim] (drawn from
        ``generator`` when None) -> normalised actions [B, T, action_dim] ([left 7, right 7, claw 2]).

        ``use_cache``: reuse the prefix K/V (``prefix.layer_kv``, or ``kv_cache``, which is cropped back
        to the prefix after every step) instead of recomputing the prefix jointly in every step.
        ``rtc``: normalised, padded RTCTarget (guided sampling, needs autograd). ``timings`` receives
        ``expert_step_k`` seconds.
        """
        h = self.config.action_head
        b = state.shape[0]
        dtype, device = prefix.features.dtype, prefix.features.device
        noise = initial_noise(
            noise, rtc, (b, self.config.action_horizon, h.max_action_dim), generator, prefix.features
        )
        self._check_embodiment(embodiment_id)
        ctx = self.suffix_context(prefix, state, use_cache, kv_cache)
        sign = self.velocity_sign()

        def velocity_fn(x_t: torch.Tensor, t: float, step: int) -> torch.Tensor:
            t0 = _now(device) if timings is not None else 0.0
            tv = torch.full((b,), self.model_time(t), device=device, dtype=dtype)
            v = self.forward_velocity(prefix, ctx, x_t, tv)
            if timings is not None:
                timings[f"expert_step_{step}"] = _now(device) - t0
            return v if sign > 0 else -v

        x1 = euler_sample(velocity_fn, noise, num_steps or self.config.num_inference_steps, rtc)
        return x1[..., : h.action_dim]


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
