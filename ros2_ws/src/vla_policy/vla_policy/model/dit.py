"""Cross-attention DiT and the VL self-attention transformer, with GR00T/diffusers key names.

Key layout (as GR00T's ``cross_attention_dit.py``): ``timestep_encoder.timestep_embedder.linear_{1,2}``,
``transformer_blocks.N.{norm1.linear, attn1.to_q/to_k/to_v/to_out.0, norm3, ff.net.0.proj, ff.net.2}``,
``proj_out_1`` (AdaLN modulation of the output norm), ``proj_out_2`` (inner_dim -> output_dim).

Cross-attention K/V of the VL features do not depend on the noisy actions or the timestep, so
:meth:`DiT.project_cross_kv` computes them once per chunk and every denoising step reuses them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]


def timestep_embedding(t: torch.Tensor, channels: int, max_period: float = 10000.0) -> torch.Tensor:
    """diffusers ``Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=1)``: [B] -> [B, C]."""
    half = channels // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    emb = t.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEncoder(nn.Module):
    """Discretised timestep [B] long -> temb [B, dim]."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.timestep_embedder = TimestepEmbedder(channels, dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(timesteps, self.channels)
        return self.timestep_embedder(emb.to(self.timestep_embedder.linear_1.weight.dtype))


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, modulated by the timestep embedding: norm(x) * (1 + scale) + shift."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim * 2)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class GELUProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """diffusers FeedForward('gelu-approximate', final_dropout=True): keys net.0.proj, net.2; dropout after
    the activation and after the output projection (net.1, net.3: no weights)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [GELUProj(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim), nn.Dropout(dropout)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class Attention(nn.Module):
    """Multi-head attention with diffusers key names; K/V may come precomputed (cross-attention cache)."""

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.is_cross = cross_attention_dim is not None
        kv_dim = cross_attention_dim or query_dim
        # GR00T's attention (diffusers Attention(bias=True)) has q/k/v biases; the seed's had none
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def project_kv(self, context: torch.Tensor) -> KV:
        """context [B, L, kv_dim] -> (K, V), each [B, heads, L, dim_head]."""
        return self._split(self.to_k(context)), self._split(self.to_v(context))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        kv: KV | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, S, q_dim]; context [B, L, kv_dim] or kv; mask [B, L] bool (True = attend) -> [B, S, q]."""
        q = self._split(self.to_q(x))
        if kv is None:
            kv = self.project_kv(x if context is None else context)
        k, v = kv
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.dim_head)
        return self.to_out[1](self.to_out[0](out))


class BasicTransformerBlock(nn.Module):
    """norm1 -> attn1 (cross or self) -> residual -> norm3 -> ff -> residual. AdaLN in the DiT."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None,
        ada_norm: bool,
        eps: float,
        ff_mult: int = 4,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.ada_norm = ada_norm
        self.norm1: nn.Module = AdaLayerNorm(dim, eps) if ada_norm else nn.LayerNorm(dim, eps=eps)
        self.attn1 = Attention(dim, heads, dim_head, cross_attention_dim, bias=bias, dropout=dropout)
        # GR00T's blocks (final_dropout=True) drop the attention output once more before the residual
        self.final_dropout = nn.Dropout(dropout)
        # GR00T's DiT uses non-affine norms (norm_elementwise_affine=False); the VL transformer keeps affine
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=not ada_norm)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        kv: KV | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.norm1(x, temb) if self.ada_norm else self.norm1(x)
        x = x + self.final_dropout(self.attn1(h, context=context, kv=kv, mask=mask))
        return x + self.ff(self.norm3(x))


class DiT(nn.Module):
    """hidden_states [B, S, inner] + timestep [B] + VL K/V -> [B, S, output_dim].

    Block i uses cross-attention to the VL features when i is even (or always without interleaving),
    and self-attention over the state/future/action tokens otherwise.
    """

    def __init__(
        self,
        num_layers: int,
        heads: int,
        dim_head: int,
        output_dim: int,
        cross_attention_dim: int,
        interleave_self_attention: bool,
        timestep_channels: int,
        eps: float,
        ff_mult: int,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim = heads * dim_head
        self.cross_layers = [i for i in range(num_layers) if i % 2 == 0 or not interleave_self_attention]
        self.timestep_encoder = TimestepEncoder(timestep_channels, dim)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    dim,
                    heads,
                    dim_head,
                    cross_attention_dim if i in self.cross_layers else None,
                    ada_norm=True,
                    eps=eps,
                    ff_mult=ff_mult,
                    bias=bias,
                    dropout=dropout,
                )
                for i in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, output_dim)

    def project_cross_kv(self, vl_features: torch.Tensor) -> tuple[KV, ...]:
        """vl_features [B, L, cross_dim] -> per cross-attention block (K, V), each [B, heads, L, dim_head]."""
        return tuple(self.transformer_blocks[i].attn1.project_kv(vl_features) for i in self.cross_layers)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        vl_mask: torch.Tensor | None,
        cross_kv: tuple[KV, ...] | None = None,
        vl_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Give cross_kv (cached, from project_cross_kv) or vl_features (K/V recomputed here)."""
        if cross_kv is None:
            if vl_features is None:
                raise ValueError("DiT needs cross_kv or vl_features")
            cross_kv = self.project_cross_kv(vl_features)
        temb = self.timestep_encoder(timestep)
        x = hidden_states
        kv_iter = iter(cross_kv)
        for i, block in enumerate(self.transformer_blocks):
            if i in self.cross_layers:
                x = block(x, temb=temb, kv=next(kv_iter), mask=vl_mask)
            else:
                x = block(x, temb=temb)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)
        x = self.norm_out(x) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out_2(x)


class SelfAttentionTransformer(nn.Module):
    """``vl_self_attention``: LayerNorm blocks of self-attention + FF over the VL features [B, L, D]."""

    def __init__(
        self, num_layers: int, dim: int, heads: int, bias: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    dim, heads, dim // heads, None, ada_norm=False, eps=1e-5, bias=bias, dropout=dropout
                )
                for _ in range(num_layers)
            ]
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x, mask=mask)
        return x
