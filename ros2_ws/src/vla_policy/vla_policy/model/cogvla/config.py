"""CogVLA prefix options (CogVLA) as one frozen, validated config.

``BackboneConfig.cogvla`` is ``None`` by default: the GR00T prefix is built exactly as before. When set,
:class:`vla_policy.model.cogvla.backbone.CogVLABackbone` is built instead and these fields switch parts on:

- ``film``: FiLM of every ViT block by the mean instruction embedding
  (``vla_policy.model.cogvla.film_vision``).
- ``aggregation_tokens``: N learned tokens appended to the patches; only they leave the ViT
  (``vla_policy.model.cogvla.aggregation_tokens``).
- ``dual_encoder``: SigLIP + DINOv2 with a language-conditioned router
  (``vla_policy.model.cogvla.routed_vision``).
- ``prune_layers`` / ``prune_keep_ratios``: language-guided pruning of image tokens inside the LLM
  (``vla_policy.model.cogvla.token_pruning``).
- ``parallel_action_chunking``: bidirectional attention among action tokens (see the field comment).
- ``lora_rank``: LoRA adapters on the CogVLA parts (``vla_policy.model.lora``), merged before export.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from vla_policy.strict_config import require

LORA_TARGETS = ("film", "router", "pruner", "dino_proj", "mlp1")


@dataclass(frozen=True)
class DinoV2Config:
    """DINOv2 tower of the dual encoder (``transformers.Dinov2Config`` fields); sizes from config."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    mlp_ratio: int = 2
    patch_size: int = 16  # the patch grid must match SigLIP's when there are no aggregation tokens
    layer_norm_eps: float = 1e-6
    layerscale_value: float = 1.0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "patch_size"):
            require(
                getattr(self, name) > 0, f"cogvla.dino.{name} must be positive, got {getattr(self, name)}"
            )
        require(
            self.hidden_size % self.num_attention_heads == 0,
            f"cogvla.dino.hidden_size {self.hidden_size} must be divisible by num_attention_heads "
            f"{self.num_attention_heads}",
        )


@dataclass(frozen=True)
class CogVLAConfig:
    """Which CogVLA prefix options are on, and their sizes. All off -> the GR00T prefix values."""

    film: bool = False
    aggregation_tokens: int = 0  # 0: off; N: N learned tokens per image replace the patches (CogVLA: 64)
    dual_encoder: bool = False
    dino: DinoV2Config = field(default_factory=DinoV2Config)
    router_hidden: int = 0  # router MLP width; 0 -> the LLM width (CogVLA: 4096 -> 4096 -> 2)
    # LLM layer indices (0-based) before which image tokens are pruned; each keeps ratio x the image
    # tokens of the prompt. Pruned tokens leave the computation and keep their hidden state from then on.
    prune_layers: tuple[int, ...] = ()
    prune_keep_ratios: tuple[float, ...] = ()
    prune_film: bool = True  # the pruning router's input is FiLMed by the mean text hidden state
    # All three action experts already attend bidirectionally among action tokens (the DiT's self-
    # attention has no mask; deep_fusion's suffix and kv_cache_expert's queries are non-causal), so this
    # is CogVLA's parallel decoding. False (causal action decoding) is not implemented and is rejected.
    parallel_action_chunking: bool = True
    lora_rank: int = 0  # 0: no adapters
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        require(self.aggregation_tokens >= 0, "cogvla.aggregation_tokens must be >= 0")
        require(self.router_hidden >= 0, "cogvla.router_hidden must be >= 0")
        require(
            len(self.prune_layers) == len(self.prune_keep_ratios),
            f"cogvla.prune_layers {self.prune_layers} and prune_keep_ratios {self.prune_keep_ratios} "
            "must have the same length",
        )
        require(
            list(self.prune_layers) == sorted(set(self.prune_layers)),
            f"cogvla.prune_layers must be strictly increasing, got {self.prune_layers}",
        )
        require(all(i >= 0 for i in self.prune_layers), "cogvla.prune_layers must be >= 0")
        ratios = self.prune_keep_ratios
        require(
            all(0.0 < r <= 1.0 for r in ratios), f"cogvla.prune_keep_ratios must be in (0, 1], got {ratios}"
        )
        require(
            all(a >= b for a, b in itertools.pairwise(ratios)),
            f"cogvla.prune_keep_ratios must not increase (pruned tokens stay pruned), got {ratios}",
        )
        require(
            self.parallel_action_chunking,
            "cogvla.parallel_action_chunking=false (causal action decoding) is not supported: every "
            "expert decodes the action chunk with bidirectional attention",
        )
        require(self.lora_rank >= 0, "cogvla.lora_rank must be >= 0")
        require(self.lora_alpha > 0, "cogvla.lora_alpha must be > 0")
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        require(not unknown, f"cogvla.lora_targets {unknown} unknown; expected some of {LORA_TARGETS}")

    def tokens_per_image(self, num_patches: int) -> int:
        """Tokens each image contributes to the prompt: the aggregation tokens, or every patch."""
        return self.aggregation_tokens or num_patches

    def kept_image_tokens(self, num_image_tokens: int) -> tuple[int, ...]:
        """Image tokens left after each pruning layer (static top-k, so export sees fixed shapes)."""
        return tuple(max(1, round(num_image_tokens * r)) for r in self.prune_keep_ratios)

    def check(self, select_layer: int, image_size: int, siglip_patch: int) -> None:
        """Cross-checks against the backbone (called from ``BackboneConfig.__post_init__``)."""
        require(
            all(i < select_layer for i in self.prune_layers),
            f"cogvla.prune_layers {self.prune_layers} must be below language.select_layer {select_layer}",
        )
        if self.dual_encoder:
            require(
                image_size % self.dino.patch_size == 0,
                f"cogvla.dino.patch_size {self.dino.patch_size} must divide vision.image_size {image_size}",
            )
            require(
                self.aggregation_tokens > 0 or self.dino.patch_size == siglip_patch,
                "without aggregation tokens the DINOv2 and SigLIP patch grids must match: "
                f"cogvla.dino.patch_size {self.dino.patch_size} != vision.patch_size {siglip_patch}",
            )
