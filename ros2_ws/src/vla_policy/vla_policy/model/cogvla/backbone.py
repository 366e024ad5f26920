"""The Eagle backbone with CogVLA's prefix options (CogVLA), built when ``backbone.cogvla`` is set.

Vision stage (needs the prompt, for the instruction conditioning):
``pixel_values [N, 3, S, S]`` + ``input_ids, attention_mask [B, L]`` -> ``vit_embeds [N, T, D_llm]`` with
T = aggregation tokens (or patches). SigLIP blocks are FiLMed by the mean instruction embedding, and with
``dual_encoder`` a DINOv2 tower runs alongside; a router mixes the two projected outputs.

LLM stage: as the GR00T backbone, with language-guided pruning of image tokens before the chosen layers.
The output keeps its length L (pruned tokens exit early), so the attention mask and VL head are unchanged.

State-dict keys of the GR00T parts are unchanged; the new parts live under ``backbone.cogvla.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_policy.model.backbone import EagleBackbone, splice_image_embeds
from vla_policy.model.cogvla.aggregation_tokens import AggregationTokens
from vla_policy.model.cogvla.config import CogVLAConfig
from vla_policy.model.cogvla.film_vision import (
    FiLM,
    instruction_embedding,
    per_image,
    run_blocks,
    siglip_attn,
    siglip_mlp,
)
from vla_policy.model.cogvla.routed_vision import DinoV2Tower, ExpertRouter, dinov2_attn, dinov2_mlp
from vla_policy.model.cogvla.token_pruning import (
    TokenPruner,
    attention_mask_4d,
    gather_tokens,
    scatter_tokens,
)
from vla_policy.model.config import BackboneConfig
from vla_policy.model.lora import add_lora, merge_lora


class CogVLAParts(nn.Module):
    """The learned CogVLA modules (``backbone.cogvla.*``); absent options build nothing."""

    def __init__(self, config: BackboneConfig, cog: CogVLAConfig) -> None:
        super().__init__()
        d_llm, d_vit = config.language.hidden_size, config.vision.hidden_size
        n_vit = config.vision.num_hidden_layers
        self.film: nn.ModuleList | None = (
            nn.ModuleList(FiLM(d_llm, d_vit) for _ in range(n_vit)) if cog.film else None
        )
        self.aggregation = (
            AggregationTokens(cog.aggregation_tokens, d_vit) if cog.aggregation_tokens else None
        )
        self.dino: DinoV2Tower | None = None
        if cog.dual_encoder:
            d_dino = cog.dino.hidden_size
            self.dino = DinoV2Tower(cog.dino, config.vision.image_size)
            self.dino_film = (
                nn.ModuleList(FiLM(d_llm, d_dino) for _ in range(cog.dino.num_hidden_layers))
                if cog.film
                else None
            )
            self.dino_aggregation = (
                AggregationTokens(cog.aggregation_tokens, d_dino) if cog.aggregation_tokens else None
            )
            self.dino_proj = nn.Linear(d_dino, d_llm)  # SigLIP's projection is the existing mlp1
            self.router = ExpertRouter(d_llm, cog.router_hidden or d_llm, num_experts=2)
        kept = cog.kept_image_tokens(config.num_image_tokens)
        self.pruner = TokenPruner(d_llm, cog.prune_layers, kept, cog.prune_film) if cog.prune_layers else None


class CogVLABackbone(EagleBackbone):
    """EagleBackbone + CogVLA options. Same stage API; ``encode_images`` also takes the prompt."""

    needs_prompt_for_vision = True  # the vision stage (and its ONNX graph) takes input_ids/attention_mask

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        assert config.cogvla is not None
        self.cog = config.cogvla
        self.cogvla = CogVLAParts(config, self.cog)
        self.last_router_weights: torch.Tensor | None = None  # [B, 2] of the last call, for inspection
        self.last_llm_tokens: list[int] = []  # tokens per LLM layer of the last call, for describe/bench
        if self.cog.lora_rank:
            self.add_lora()

    # ---- LoRA ------------------------------------------------------------------------------------------
    def lora_modules(self) -> dict[str, nn.Module]:
        """Target name -> module whose Linear layers get adapters."""
        parts = self.cogvla
        found: dict[str, nn.Module | None] = {
            "film": nn.ModuleList([m for m in (parts.film, getattr(parts, "dino_film", None)) if m]),
            "router": getattr(parts, "router", None),
            "pruner": parts.pruner,
            "dino_proj": nn.Sequential(parts.dino_proj) if parts.dino is not None else None,
            "mlp1": nn.Sequential(self.eagle_model.mlp1),
        }
        return {k: v for k, v in found.items() if v is not None and k in self.cog.lora_targets}

    def add_lora(self) -> list[str]:
        names: list[str] = []
        for target, module in self.lora_modules().items():
            if isinstance(module, nn.Sequential):  # a bare Linear held by its real parent
                names += [target] if self._wrap_single(target) else []
            else:
                names += [f"{target}.{n}" for n in add_lora(module, self.cog.lora_rank, self.cog.lora_alpha)]
        return names

    def _wrap_single(self, target: str) -> bool:
        from vla_policy.model.lora import LoRALinear

        owner, attr = (self.eagle_model, "mlp1") if target == "mlp1" else (self.cogvla, "dino_proj")
        linear = getattr(owner, attr)
        if isinstance(linear, nn.Linear):
            setattr(owner, attr, LoRALinear(linear, self.cog.lora_rank, self.cog.lora_alpha))
            return True
        return False

    def merge_lora(self) -> int:
        """Fold every adapter into its Linear (before export); returns how many were merged."""
        return merge_lora(self)

    # ---- vision -------------------------------------------------------------------------------------
    def instruction_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """-> [B, D_llm], the mean instruction embedding that conditions FiLM and the router."""
        embed = self.eagle_model.language_model.model.get_input_embeddings()
        return instruction_embedding(embed, input_ids, attention_mask, self._image_token_id)

    def _siglip(self, pixel_values: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """pixel_values [N, 3, S, S], cond [N, D_llm] -> SigLIP tokens [N, T, D_vit] (FiLM, aggregation)."""
        vt = self.eagle_model.vision_model  # transformers 5: SiglipVisionModel holds the parts directly
        x = vt.embeddings(pixel_values)
        agg = self.cogvla.aggregation
        if agg is not None:
            x = agg.append(x)
        x = run_blocks(vt.encoder.layers, x, siglip_attn, siglip_mlp, self.cogvla.film, cond)
        x = vt.post_layernorm(x)
        return agg.select(x) if agg is not None else x

    def _dino(self, pixel_values: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """pixel_values [N, 3, S, S], cond [N, D_llm] -> DINOv2 tokens [N, T, D_dino]."""
        tower = self.cogvla.dino
        assert tower is not None
        x = tower.embed(pixel_values)
        agg = self.cogvla.dino_aggregation
        if agg is not None:
            x = agg.append(x)
        x = run_blocks(tower.layers, x, dinov2_attn, dinov2_mlp, self.cogvla.dino_film, cond)
        x = tower.final_norm(x)
        return agg.select(x) if agg is not None else x

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pixel_values [N, 3, S, S] (+ prompt [B, L]) -> vit_embeds [N, tokens_per_image, D_llm]."""
        needs_text = self.cog.film or self.cog.dual_encoder
        if needs_text and (input_ids is None or attention_mask is None):
            raise ValueError("CogVLA FiLM/router vision needs the prompt: pass input_ids and attention_mask")
        cond_b = self.instruction_embedding(input_ids, attention_mask) if needs_text else None  # [B, D]
        cond = per_image(cond_b, pixel_values.shape[0]) if cond_b is not None else None  # [N, D]
        siglip = self.eagle_model.mlp1(self._siglip(pixel_values, cond if self.cog.film else None))
        if self.cogvla.dino is None:
            return siglip
        assert cond is not None and cond_b is not None
        dino = self.cogvla.dino_proj(self._dino(pixel_values, cond if self.cog.film else None))
        weights_b = self.cogvla.router(cond_b)  # [B, 2], rows sum to 1
        if not torch.compiler.is_exporting():  # a tensor attribute set while tracing would be a graph leak
            self.last_router_weights = weights_b.detach()
        weights = per_image(weights_b, pixel_values.shape[0])
        return ExpertRouter.mix(weights, [siglip, dino.to(siglip.dtype)])

    # ---- LLM ----------------------------------------------------------------------------------------
    def llm_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        """As EagleBackbone.llm_hidden, pruning image tokens before the configured layers -> [B, L, D]."""
        pruner = self.cogvla.pruner
        if pruner is None:
            self.last_llm_tokens = [input_ids.shape[1]] * self.config.language.select_layer
            return super().llm_hidden(input_ids, attention_mask, vit_embeds)
        lm = self.eagle_model.language_model.model
        embeds = lm.get_input_embeddings()(input_ids)
        selected = input_ids == self._image_token_id
        flat = vit_embeds.reshape(-1, vit_embeds.shape[-1]).to(embeds.dtype)
        if not torch.compiler.is_exporting():  # data-dependent checks cannot be traced
            n_sel = int(selected.sum())
            if n_sel != flat.shape[0]:
                raise ValueError(f"{n_sel} <image> placeholders but {flat.shape[0]} image tokens")
        h = splice_image_embeds(embeds, selected, flat)
        valid = attention_mask.bool()
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # as the GR00T path
        b, length = input_ids.shape
        seq = torch.arange(length, device=h.device).unsqueeze(0).expand(b, length)
        index = seq  # original position of each token still in the computation
        full = h  # early-exit states of every token, written back when it is pruned and at the end
        num_image = self.config.num_image_tokens
        schedule = pruner.schedule
        tokens: list[int] = []
        training = self.training and torch.is_grad_enabled()
        for i, layer in enumerate(lm.layers):
            if i in schedule:
                router, k = schedule[i]
                keep, scores = pruner.prune(router, h, valid, selected, num_image, k)
                full = scatter_tokens(full, index, h)
                h, position_ids, seq = (gather_tokens(t, keep) for t in (h, position_ids, seq))
                valid, selected, index = (gather_tokens(t, keep) for t in (valid, selected, index))
                if training:  # straight-through: same values, but the router gets a gradient
                    p = gather_tokens(scores, keep).to(h.dtype).unsqueeze(-1)
                    h = h * (p / p.detach())
                num_image = k
            tokens.append(h.shape[1])
            cos_sin = lm.rotary_emb(h, position_ids)
            h = layer(
                h,
                attention_mask=attention_mask_4d(seq, valid),
                position_ids=position_ids,
                position_embeddings=cos_sin,
            )
        if not torch.compiler.is_exporting():
            self.last_llm_tokens = tokens
        return lm.norm(scatter_tokens(full, index, h))


def token_counts(config: BackboneConfig, text_tokens: int = 16) -> dict[str, object]:
    """Tokens at each prefix stage for one observation with ``text_tokens`` instruction tokens."""
    v = config.vision
    images = len(config.cameras) * config.history_frames
    cog = config.cogvla
    prompt = (1 if config.bos_token else 0) + config.num_image_tokens + text_tokens
    per_layer = [prompt] * config.language.select_layer
    if cog is not None:
        kept = dict(zip(cog.prune_layers, cog.kept_image_tokens(config.num_image_tokens), strict=True))
        current = prompt
        for i in range(config.language.select_layer):
            if i in kept:
                current = prompt - config.num_image_tokens + kept[i]
            per_layer[i] = current
    extra = cog.aggregation_tokens if cog is not None else 0
    return {
        "images": images,
        "vit_tokens_per_image": v.num_patches + extra,
        "image_tokens_per_image": config.tokens_per_image,
        "image_tokens": config.num_image_tokens,
        "text_tokens": text_tokens,
        "llm_input_tokens": prompt,
        "llm_tokens_per_layer": per_layer,
        "prefix_output_tokens": prompt,
    }
