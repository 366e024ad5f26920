"""Per-embodiment (category-specific) layers and the action decoders.

Two layouts (``DecoderConfig.layout``): ``reference`` is GR00T N1.5's single ``action_decoder`` MLP that
predicts every padded action dim; ``split`` is the seed's SharedBottomArmDecoder + claw MLP, whose output
per step is ``[left 7, right 7, claw 2]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.model.config import DecoderConfig


class CategorySpecificLinear(nn.Module):
    """One linear layer per embodiment: W [num_categories, in, out], b [num_categories, out]."""

    def __init__(self, num_categories: int, input_dim: int, output_dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.init_std = init_std
        self.W = nn.Parameter(torch.empty(num_categories, input_dim, output_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, output_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.W.device.type == "meta":
                return
            if self.init_std > 0:  # GR00T: W ~ N(0, 0.02)
                self.W.normal_(0.0, self.init_std)
            else:  # the seed: nn.Linear's default scale, so tiny models train out of the box
                bound = 1.0 / math.sqrt(self.W.shape[1])
                self.W.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        """x [B, T, in], cat_ids [B] long -> [B, T, out]."""
        return torch.bmm(x, self.W[cat_ids]) + self.b[cat_ids].unsqueeze(1)


class CategorySpecificMLP(nn.Module):
    """layer1 -> ReLU -> layer2, per embodiment."""

    def __init__(
        self, num_categories: int, input_dim: int, hidden_dim: int, output_dim: int, init_std: float = 0.0
    ) -> None:
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, input_dim, hidden_dim, init_std)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, output_dim, init_std)

    def forward(self, x: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x, cat_ids)), cat_ids)


class SharedBottomArmDecoder(nn.Module):
    """Shared per-embodiment layer + ReLU, optional symmetric left<->right cross-attention, 7-dim heads."""

    def __init__(self, num_categories: int, input_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.use_cross_attention = config.use_cross_attention_arms
        self.shared_layer = CategorySpecificLinear(num_categories, input_dim, h)
        if self.use_cross_attention:
            self.layer_norm_left = nn.LayerNorm(h)
            self.layer_norm_right = nn.LayerNorm(h)
            self.cross_attn_left = nn.MultiheadAttention(h, config.cross_attention_heads, batch_first=True)
            self.cross_attn_right = nn.MultiheadAttention(h, config.cross_attention_heads, batch_first=True)
        self.left_output_layer = CategorySpecificLinear(num_categories, h, config.left_arm_dim)
        self.right_output_layer = CategorySpecificLinear(num_categories, h, config.right_arm_dim)

    def forward(self, x: torch.Tensor, cat_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, input_dim] -> (left [B, T, 7], right [B, T, 7])."""
        shared = F.relu(self.shared_layer(x, cat_ids))
        if not self.use_cross_attention:
            return self.left_output_layer(shared, cat_ids), self.right_output_layer(shared, cat_ids)
        left = self.layer_norm_left(shared)
        right = self.layer_norm_right(shared)
        # symmetric: both attend to the other side's *un-updated* features, so neither arm goes first
        left_att, _ = self.cross_attn_left(left, right, right, need_weights=False)
        right_att, _ = self.cross_attn_right(right, left, left, need_weights=False)
        left = left + left_att
        right = right + right_att
        return self.left_output_layer(left, cat_ids), self.right_output_layer(right, cat_ids)


def build_decoders(
    head: nn.Module,
    num_categories: int,
    input_dim: int,
    config: DecoderConfig,
    action_dim: int,
    init_std: float = 0.0,
) -> None:
    """Attach the decoders to ``head``: ``action_decoder`` (reference layout, ``action_dim`` outputs), or
    shared_arm_decoder / action_arm_decoder and action_claw_decoder (split layout)."""
    if config.layout == "reference":
        head.action_decoder = CategorySpecificMLP(
            num_categories, input_dim, config.hidden_size, action_dim, init_std
        )
        return
    if config.split_arm_heads:
        head.shared_arm_decoder = SharedBottomArmDecoder(num_categories, input_dim, config)
    else:
        head.action_arm_decoder = CategorySpecificMLP(
            num_categories, input_dim, config.hidden_size, config.left_arm_dim + config.right_arm_dim
        )
    head.action_claw_decoder = CategorySpecificMLP(
        num_categories, input_dim, config.hidden_size, config.claw_dim
    )


def decode(head: nn.Module, x: torch.Tensor, cat_ids: torch.Tensor) -> torch.Tensor:
    """DiT action-token output [B, T, input_dim] -> [B, T, max_action_dim] (reference layout) or
    [B, T, left + right + claw] (split layout)."""
    if hasattr(head, "action_decoder"):
        return head.action_decoder(x, cat_ids)
    if hasattr(head, "shared_arm_decoder"):
        left, right = head.shared_arm_decoder(x, cat_ids)
        arms = torch.cat([left, right], dim=-1)
    else:
        arms = head.action_arm_decoder(x, cat_ids)
    return torch.cat([arms, head.action_claw_decoder(x, cat_ids)], dim=-1)
