"""Eagle backbone (GR00T N1.5): SigLIP -> mlp1, spliced into Qwen3 at ``<image>`` tokens, cut at select_layer.

State-dict keys follow GR00T N1.5: ``eagle_model.vision_model.*`` (a ``SiglipVisionModel``),
``eagle_model.mlp1`` (Eagle's projector ``mlp1.{0,1,3}`` = LayerNorm, Linear, GELU, Linear after the pixel
shuffle; or the seed's single Linear ``mlp1``), ``eagle_model.language_model.model.*`` (a ``Qwen3Model``
with only ``select_layer`` layers), ``eagle_linear``. Everything is built from config; nothing is
downloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen3Config, Qwen3Model, SiglipVisionConfig, SiglipVisionModel

from vla_policy.model.config import BackboneConfig


def siglip_config(config: BackboneConfig) -> SiglipVisionConfig:
    v = config.vision
    return SiglipVisionConfig(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        num_channels=v.num_channels,
        image_size=v.image_size,
        patch_size=v.patch_size,
        layer_norm_eps=v.layer_norm_eps,
        hidden_act=v.hidden_act,
        vision_use_head=False,  # the pooling head is unused by Eagle; not building it keeps keys GR00T-like
        attn_implementation="sdpa",
    )


def qwen3_config(config: BackboneConfig) -> Qwen3Config:
    lm = config.language
    return Qwen3Config(
        vocab_size=lm.vocab_size,
        hidden_size=lm.hidden_size,
        intermediate_size=lm.intermediate_size,
        # layers past select_layer are neither built nor loaded: hidden_states[select_layer] is the output
        num_hidden_layers=lm.select_layer,
        num_attention_heads=lm.num_attention_heads,
        num_key_value_heads=lm.num_key_value_heads,
        head_dim=lm.head_dim,
        max_position_embeddings=lm.max_position_embeddings,
        rms_norm_eps=lm.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": lm.rope_theta},
        use_cache=False,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


def splice_image_embeds(
    embeds: torch.Tensor, selected: torch.Tensor, image_embeds: torch.Tensor
) -> torch.Tensor:
    """Put image_embeds [N, D] at the placeholder positions ``selected`` [B, L] of embeds [B, L, D].

    Placeholders are filled row-major (prompt order), matching the view-major image features. A gather
    by running placeholder count, rather than masked_scatter, keeps the graph free of data-dependent
    shapes, so it exports to ONNX with a dynamic sequence length.
    """
    b, length, d = embeds.shape
    index = (selected.reshape(-1).long().cumsum(0) - 1).clamp(0, image_embeds.shape[0] - 1)
    gathered = image_embeds.index_select(0, index).reshape(b, length, d)
    return torch.where(selected.unsqueeze(-1), gathered, embeds)


class LanguageModel(nn.Module):
    """Holds the Qwen3 decoder as ``.model`` so keys read ``language_model.model.layers.N`` as in GR00T."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.model = Qwen3Model(qwen3_config(config))


def pixel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """Eagle's pixel shuffle at ratio 0.5: x [N, P, C] (a square grid of P patches) -> [N, P/4, 4C].

    Each output token holds a 2x2 block of patches; the channel order is Eagle's (two half-resolution
    passes over the transposed grid), so the projector's weights read the channels they were trained on.
    """
    n, p, c = x.shape
    side = round(p**0.5)
    x = x.reshape(n, side, side, c)  # [N, W, H, C] in Eagle's naming
    x = x.reshape(n, side, side // 2, c * 2).permute(0, 2, 1, 3)
    x = x.reshape(n, side // 2, side // 2, c * 4).permute(0, 2, 1, 3)
    return x.reshape(n, -1, c * 4)


def build_projector(config: BackboneConfig) -> nn.Module:
    """mlp1: Eagle's projector (keys mlp1.0 ... mlp1.3, or mlp1.0 with one layer) or the seed's Linear."""
    d_in, d_out = config.projector_input_dim, config.language.hidden_size
    if config.projector == "linear":
        return nn.Linear(d_in, d_out)
    if config.projector_layers == 1:
        return nn.Sequential(nn.Linear(d_in, d_out))
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class EagleModel(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.vision_model = SiglipVisionModel(siglip_config(config))
        self.mlp1 = build_projector(config)
        self.language_model = LanguageModel(config)


class EagleBackbone(nn.Module):
    """pixel_values + prompt ids -> backbone_features [B, L, output_dim] and attention mask [B, L]."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.eagle_model = EagleModel(config)
        d = config.language.hidden_size
        self.eagle_linear: nn.Module = (
            nn.Linear(d, config.project_to_dim) if config.project_to_dim else nn.Identity()
        )

    needs_prompt_for_vision = False  # CogVLABackbone: FiLM/router condition the ViT on the instruction

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pixel_values [N, 3, S, S] -> vit_embeds [N, tokens_per_image, llm_hidden] (SigLIP, the pixel
        shuffle when configured, then mlp1).

        The prompt (input_ids, attention_mask [B, L]) is ignored here; CogVLABackbone conditions on it."""
        vision = self.eagle_model.vision_model(pixel_values=pixel_values).last_hidden_state
        if self.config.pixel_shuffle:
            vision = pixel_shuffle(vision)
        return self.eagle_model.mlp1(vision)

    def encode_language(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Splice vit_embeds into the <image> positions, run the cut LLM, then eagle_linear.

        input_ids [B, L], attention_mask [B, L] bool, vit_embeds [B * V * F, patches, D] view-major per row
        -> backbone_features [B, L, output_dim].
        """
        return self.eagle_linear(self.llm_hidden(input_ids, attention_mask, vit_embeds))

    def llm_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        """As encode_language without eagle_linear -> [B, L, llm_hidden]."""
        lm = self.eagle_model.language_model.model
        embeds = lm.get_input_embeddings()(input_ids)
        selected = input_ids == self._image_token_id
        flat = vit_embeds.reshape(-1, vit_embeds.shape[-1]).to(embeds.dtype)
        if not torch.compiler.is_exporting():  # a data-dependent check cannot be traced
            n_sel = int(selected.sum())
            if n_sel != flat.shape[0]:
                raise ValueError(f"{n_sel} <image> placeholders but {flat.shape[0]} image tokens")
        embeds = splice_image_embeds(embeds, selected, flat)
        # positions count only real tokens so left padding does not shift RoPE phases (GR00T counts the
        # padding too; RoPE scores depend on position differences only, so the real tokens agree)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        out = lm(
            inputs_embeds=embeds,
            attention_mask=attention_mask.long(),
            position_ids=position_ids,
            use_cache=False,
        )
        # last_hidden_state is the final RMSNorm over layer select_layer = HF's hidden_states[select_layer]
        # of the truncated model, as GR00T uses it
        return out.last_hidden_state

    _image_token_id: int = -1

    def set_image_token_id(self, token_id: int) -> None:
        self._image_token_id = token_id

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """-> backbone_features [B, L, output_dim]."""
        return self.encode_language(input_ids, attention_mask, self.encode_images(pixel_values))
