"""Per-layer K/V of the cut Qwen3 LLM, the prefix KV cache, and joint prefix/suffix attention.

The layer-KV experts (``deep_fusion``, PI0; ``kv_cache_expert``, Alpamayo-R1) attend at every layer to the
LLM's keys and values of the prefix (image + text tokens). This module runs the backbone's own Qwen3 layers
(``backbone.eagle_model.language_model.model``) with explicit masks instead of through ``Qwen3Model.forward``:

- :func:`llm_prefix_kv` runs the prefix once (causal as the VLM, or bidirectional as PI0's prefix) and
  returns the post-RoPE K/V of every built layer, ``[B, kv_heads, L, head_dim]`` each, as HF caches do.
- :func:`suffix_forward` runs the expert's layers over the suffix tokens, each layer attending to
  ``[cached prefix K/V ; own K/V]`` through a :class:`PrefixKVCache` that is cropped back afterwards.
- :func:`joint_forward` is the uncached reference: prefix (LLM layers) and suffix (expert layers) run
  through joint attention at every layer, each side with its own norms, QKV, output projection and MLP.

Both sides use Qwen3 decoder layers (``input_layernorm``, ``self_attn.{q,k,v,o}_proj``, ``q_norm``,
``k_norm``, ``post_attention_layernorm``, ``mlp``), one head space (heads, KV heads, head_dim) and one RoPE.
Everything is plain tensor code (no HF cache objects), so it exports to ONNX with dynamic sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.model.backbone import splice_image_embeds
from vla_policy.observation import KVPairs

__all__ = [
    "PrefixKVCache",
    "apply_rope",
    "attention",
    "embed_prefix",
    "finish_layer",
    "joint_attention_mask",
    "joint_forward",
    "llm_prefix_kv",
    "prefix_attention_mask",
    "prefix_positions",
    "project_qkv",
    "rope_cos_sin",
    "suffix_attention_mask",
    "suffix_forward",
]


# ---- RoPE and attention primitives ------------------------------------------------------------------
def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Default RoPE as Qwen3's rotary embedding: position_ids [B, L] -> cos, sin [B, L, head_dim]."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim)
    )
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, hd] rotated by cos/sin [B, L, hd] (HF ``rotate_half`` convention)."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def project_qkv(
    layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-norm, Q/K/V projections, q/k RMSNorm and RoPE of one Qwen3 decoder layer.

    x [B, L, width] -> q [B, heads, L, hd], k and v [B, kv_heads, L, hd] (k after RoPE, as cached).
    """
    attn = layer.self_attn
    hd = attn.head_dim
    h = layer.input_layernorm(x)
    b, length, _ = h.shape
    q = attn.q_norm(attn.q_proj(h).view(b, length, -1, hd)).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(h).view(b, length, -1, hd)).transpose(1, 2)
    v = attn.v_proj(h).view(b, length, -1, hd).transpose(1, 2)
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query SDPA. q [B, H, Lq, hd], k/v [B, Hkv, Lk, hd], mask [B, Lq, Lk] bool (True = attend)
    -> [B, Lq, H * hd]. Every query row must attend to at least one key (see the mask builders)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    return out.transpose(1, 2).flatten(2)


def finish_layer(layer: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Output projection + residual, then post-norm MLP + residual. x [B, L, width], attn_out
    [B, L, heads * hd] -> [B, L, width]."""
    x = x + layer.self_attn.o_proj(attn_out)
    return x + layer.mlp(layer.post_attention_layernorm(x))


# ---- masks and positions ---------------------------------------------------------------------------
def prefix_positions(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, L] bool -> RoPE positions [B, L]: only real tokens count, so left padding shifts nothing."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def prefix_attention_mask(mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Prefix self-attention mask [B, L, L]: real keys only (and earlier ones when ``causal``).

    Padded query rows attend to themselves so no row is empty (an empty row makes SDPA emit NaN, which a
    zero attention weight would not cancel). Their outputs never reach a real token.
    """
    b, length = mask.shape
    m = mask.bool()[:, None, :].expand(b, length, length)
    eye = torch.eye(length, dtype=torch.bool, device=mask.device)
    if causal:
        m = m & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return m | eye


def suffix_attention_mask(prefix_mask: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Suffix query mask [B, S, L + S]: every real prefix token, and suffix token j from query i iff
    ``blocks[j] <= blocks[i]`` (PI0's block-causal suffix: tokens of one block see each other).

    prefix_mask [B, L] bool; blocks [S] long, non-decreasing.
    """
    b = prefix_mask.shape[0]
    s = blocks.shape[0]
    pref = prefix_mask.bool()[:, None, :].expand(b, s, prefix_mask.shape[1])
    suf = (blocks[None, :] <= blocks[:, None])[None].expand(b, s, s)
    return torch.cat([pref, suf], dim=-1)


def joint_attention_mask(
    prefix_mask: torch.Tensor, blocks: torch.Tensor, causal_prefix: bool
) -> torch.Tensor:
    """Joint mask [B, L + S, L + S]: the prefix rows never see the suffix; the suffix rows as
    :func:`suffix_attention_mask`."""
    b, length = prefix_mask.shape
    s = blocks.shape[0]
    top = torch.cat(
        [
            prefix_attention_mask(prefix_mask, causal_prefix),
            torch.zeros(b, length, s, dtype=torch.bool, device=prefix_mask.device),
        ],
        dim=-1,
    )
    return torch.cat([top, suffix_attention_mask(prefix_mask, blocks)], dim=1)


# ---- the LLM side ----------------------------------------------------------------------------------
def embed_prefix(
    backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
) -> torch.Tensor:
    """Token embeddings with the image embeddings spliced in at ``<image>``, as ``EagleBackbone.llm_hidden``.

    input_ids [B, L], attention_mask [B, L], vit_embeds [N, patches, D] -> inputs_embeds [B, L, D].
    """
    lm = backbone.eagle_model.language_model.model
    embeds = lm.get_input_embeddings()(input_ids)
    selected = input_ids == backbone._image_token_id
    flat = vit_embeds.reshape(-1, vit_embeds.shape[-1]).to(embeds.dtype)
    if not torch.compiler.is_exporting():
        n_sel = int(selected.sum())
        if n_sel != flat.shape[0]:
            raise ValueError(f"{n_sel} <image> placeholders but {flat.shape[0]} image tokens")
    return splice_image_embeds(embeds, selected, flat)


def llm_prefix_kv(
    lm: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    causal: bool,
    with_hidden: bool = False,
) -> tuple[KVPairs, torch.Tensor | None]:
    """Run the built Qwen3 layers over the prefix once and keep every layer's K/V.

    lm: ``Qwen3Model`` (cut at select_layer); embeds [B, L, D]; mask [B, L] bool. ``causal`` is the VLM's
    own attention (Alpamayo-R1); False gives PI0's bidirectional prefix. Returns per-layer
    (K, V) [B, kv_heads, L, hd] and, with ``with_hidden``, the final-norm hidden state [B, L, D] (equal to
    ``EagleBackbone.llm_hidden`` for ``causal``); otherwise the last layer stops after its K/V.
    """
    cfg = lm.config
    cos, sin = rope_cos_sin(prefix_positions(mask), cfg.head_dim, _rope_theta(cfg), embeds.dtype)
    am = prefix_attention_mask(mask, causal)
    x = embeds
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    n = len(lm.layers)
    for i, layer in enumerate(lm.layers):
        q, k, v = project_qkv(layer, x, cos, sin)
        kv.append((k, v))
        if i == n - 1 and not with_hidden:
            break  # the last layer's output feeds nothing the experts read
        x = finish_layer(layer, x, attention(q, k, v, am))
    return tuple(kv), (lm.norm(x) if with_hidden else None)


def _rope_theta(cfg: object) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


# ---- the cache -------------------------------------------------------------------------------------
class PrefixKVCache:
    """Per-layer prefix K/V that the suffix appends to during one denoising step and that is cropped back
    to the prefix afterwards (Alpamayo-R1's ``prompt_cache.crop(prefill_seq_len)``), so it never grows.

    keys[i], values[i]: [B, kv_heads, length, hd].
    """

    def __init__(self, layer_kv: KVPairs) -> None:
        self.keys = [k for k, _ in layer_kv]
        self.values = [v for _, v in layer_kv]
        self.prefix_length = self.get_seq_length()

    def __len__(self) -> int:
        return len(self.keys)

    def get_seq_length(self, layer: int = 0) -> int:
        return int(self.keys[layer].shape[2]) if self.keys else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k/v [B, kv_heads, S, hd] to layer ``layer``
        -> its whole K/V [B, kv_heads, length + S, hd]."""
        self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
        self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]

    def crop(self, length: int) -> None:
        """Drop everything past ``length`` tokens in every layer."""
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]

    def as_layer_kv(self) -> KVPairs:
        return tuple(zip(self.keys, self.values, strict=True))


# ---- the expert side -------------------------------------------------------------------------------
def suffix_forward(
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    cache: PrefixKVCache,
    mask: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """Expert layers over the suffix with the cached prefix K/V; the cache is cropped back on return.

    x [B, S, width]; mask [B, S, L + S] (:func:`suffix_attention_mask`); cos/sin [B, S, hd] at the suffix
    positions -> [B, S, width] (before the final norm).
    """
    if len(layers) != len(cache):
        raise ValueError(f"{len(layers)} expert layers but {len(cache)} cached LLM layers")
    length = cache.prefix_length
    try:
        for i, layer in enumerate(layers):
            q, k, v = project_qkv(layer, x, cos, sin)
            k_all, v_all = cache.update(i, k, v)
            x = finish_layer(layer, x, attention(q, k_all, v_all, mask))
    finally:
        cache.crop(length)
    return x


def joint_forward(
    llm_layers: Sequence[nn.Module],
    expert_layers: Sequence[nn.Module],
    prefix: torch.Tensor,
    suffix: torch.Tensor,
    mask: torch.Tensor,
    rope_prefix: tuple[torch.Tensor, torch.Tensor],
    rope_suffix: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Deep fusion without a cache: at every layer, prefix (LLM layer) and suffix (expert layer) Q/K/V are
    concatenated, attend jointly under ``mask`` [B, L + S, L + S], are split, and each side applies its own
    output projection and MLP. prefix [B, L, D_llm], suffix [B, S, width] -> suffix [B, S, width]."""
    if len(llm_layers) != len(expert_layers):
        raise ValueError(f"{len(expert_layers)} expert layers but {len(llm_layers)} LLM layers")
    length = prefix.shape[1]
    n = len(llm_layers)
    for i, (lay_p, lay_s) in enumerate(zip(llm_layers, expert_layers, strict=True)):
        qp, kp, vp = project_qkv(lay_p, prefix, *rope_prefix)
        qs, ks, vs = project_qkv(lay_s, suffix, *rope_suffix)
        out = attention(
            torch.cat([qp, qs], dim=2), torch.cat([kp, ks], dim=2), torch.cat([vp, vs], dim=2), mask
        )
        if i < n - 1:
            prefix = finish_layer(lay_p, prefix, out[:, :length])
        suffix = finish_layer(lay_s, suffix, out[:, length:])
    return suffix
