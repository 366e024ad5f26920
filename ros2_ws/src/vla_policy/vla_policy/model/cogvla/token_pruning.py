"""Language-guided token pruning inside the LLM (CogVLA's LFP routing), with static top-k.

Before each chosen layer a router scores the image tokens that are still in the computation, with its
input FiLMed by the mean hidden state of the text tokens (the language guidance). The top ``k`` image
tokens stay; BOS, text (and any other non-image) tokens always stay, and so would action tokens if a
prompt carried them: only ``<image>`` positions are ever candidates. Pruned tokens leave the computation
and keep their hidden state from the layer where they left (an early exit), so the LLM output keeps its
length and the attention mask is unchanged for the VL head. ``k`` comes from config, never from data, so
the graph has no data-dependent shapes and exports with the dynamo exporter.

Unlike CogVLA's per-layer scatter, pruned tokens do not come back at later layers: the saving extends to
every following layer instead of one layer per router.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_policy.model.cogvla.film_vision import FiLM


class PruningRouter(nn.Module):
    """Keep probability of each token: h [B, L, D], text mask [B, L] -> p [B, L] in (0, 1)."""

    def __init__(self, dim: int, film: bool) -> None:
        super().__init__()
        self.film = FiLM(dim, dim) if film else None
        self.proj = nn.Linear(dim, 2)  # CogVLA: softmax over (drop, keep), keep prob = [..., 1]

    def forward(self, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = hidden
        if self.film is not None:
            w = text.unsqueeze(-1).to(h.dtype)  # [B, L, 1]
            summary = (h * w).sum(1) / w.sum(1).clamp_min(1)  # mean text hidden state [B, D]
            h = self.film(h, summary)
        return torch.softmax(self.proj(h).float(), dim=-1)[..., 1]


def image_block_positions(is_image: torch.Tensor, num_image: int) -> torch.Tensor:
    """Positions [B, num_image] of the contiguous ``<image>`` block in each row of is_image [B, L].

    The prompt is ``[BOS] <image> x N <text>`` (padding on either side), and pruning keeps order, so the
    image tokens stay one contiguous block: its start (argmax = first True) plus an arange is enough, with
    no sort or nonzero (neither exports with static shapes)."""
    start = is_image.to(torch.int32).argmax(dim=1, keepdim=True)  # [B, 1]
    return start + torch.arange(num_image, device=is_image.device).unsqueeze(0)


def select_tokens(scores: torch.Tensor, is_image: torch.Tensor, num_image: int, k: int) -> torch.Tensor:
    """Indices [B, L - num_image + k] (ascending) of the tokens to keep.

    scores [B, L] keep probabilities, is_image [B, L] bool with exactly ``num_image`` contiguous True per
    row. Every non-image token is kept; of the image tokens, the top ``k`` by score.
    """
    b, length = scores.shape
    img_pos = image_block_positions(is_image, num_image)  # [B, N]
    top = scores.gather(1, img_pos).topk(k, dim=1).indices  # static k: a TopK node with a constant k
    keep = (~is_image).scatter(1, img_pos.gather(1, top), True)  # [B, L] bool
    n_keep = length - num_image + k
    # the kept positions in ascending order: a top-k of -position over the kept tokens. Every row keeps
    # exactly n_keep, so the -inf of the dropped ones never win. (A scatter into a spare slot plus a slice
    # would leave the exporter an unbacked length.)
    pos = torch.arange(length, device=scores.device).unsqueeze(0).expand(b, length)
    key = torch.where(keep, -pos.to(torch.float32), torch.finfo(torch.float32).min)
    return key.topk(n_keep, dim=1).indices


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, L, ...] at index [B, K] along dim 1 -> [B, K, ...]."""
    if x.ndim == 2:
        return x.gather(1, index)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(full: torch.Tensor, index: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """Write part [B, K, D] into full [B, L, D] at index [B, K] (out of place)."""
    return full.scatter(1, index.unsqueeze(-1).expand(-1, -1, full.shape[-1]), part)


class TokenPruner(nn.Module):
    """One router per pruning layer; ``schedule`` maps LLM layer index -> image tokens kept (k)."""

    def __init__(self, dim: int, layers: tuple[int, ...], kept: tuple[int, ...], film: bool) -> None:
        super().__init__()
        self.layers = layers
        self.kept = kept
        self.routers = nn.ModuleList(PruningRouter(dim, film) for _ in layers)

    @property
    def schedule(self) -> dict[int, tuple[int, int]]:
        """LLM layer -> (router index, image tokens kept from then on)."""
        return {layer: (i, k) for i, (layer, k) in enumerate(zip(self.layers, self.kept, strict=True))}

    def prune(
        self,
        router: int,
        hidden: torch.Tensor,
        valid: torch.Tensor,
        is_image: torch.Tensor,
        num_image: int,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [B, L, D], valid/is_image [B, L] -> (keep index [B, L - num_image + k], scores [B, L])."""
        text = valid & ~is_image
        scores = self.routers[router](hidden, text)
        return select_tokens(scores, is_image, num_image, k), scores


def attention_mask_4d(seq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Causal + padding mask from original sequence indices: seq, valid [B, L] -> bool [B, 1, L, L].

    Built from the original indices so it stays causal after a gather. A padding query may see itself,
    which avoids all-masked rows (NaN in SDPA); real tokens never see padding."""
    causal = seq.unsqueeze(1) <= seq.unsqueeze(2)  # [B, Lq, Lk]: key index <= query index
    allowed = (causal & valid.unsqueeze(1)) | (seq.unsqueeze(1) == seq.unsqueeze(2))
    return allowed.unsqueeze(1)
