"""Aggregation tokens (CogVLA): N learned tokens appended to the ViT patches; only they are kept.

They attend with the patches through every ViT block and leave the encoder as the image's summary, so an
image contributes N prompt tokens instead of its patch count (256 -> 64 at full size, 16 -> 4 in tiny).
"""

from __future__ import annotations

import torch
from torch import nn


class AggregationTokens(nn.Module):
    """``tokens`` [1, N, D]: append to and select from a ViT sequence."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)  # ViT-style small init

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    def append(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, P, D] (patch embeddings with positions) -> [N, P + num_tokens, D]."""
        return torch.cat([x, self.tokens.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, P + num_tokens, D] -> the aggregation tokens [N, num_tokens, D] (patches dropped)."""
        return x[:, x.shape[1] - self.num_tokens :]
