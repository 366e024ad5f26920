"""Model configuration: frozen, validated dataclasses for every part of the GR00T N1.5-style policy.

Build them with :func:`vla_policy.strict_config.from_dict` (unknown keys name the nearest valid key) or
take a named preset from :mod:`vla_policy.model.presets`. Every impossible value fails in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vla_policy.model.cogvla.config import CogVLAConfig
from vla_policy.strict_config import require

NORMALIZATION_MODES = ("min_max", "q99", "mean_std", "identity")
PADDING_SIDES = ("left", "right")
PROJECTORS = ("linear", "eagle")
PROMPT_FORMATS = ("plain", "chat")
IMAGE_PREPROCESSING = ("bilinear", "eagle")
DECODER_LAYOUTS = ("split", "reference")


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower (``transformers.SiglipVisionConfig`` fields)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    image_size: int = 64
    patch_size: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "image_size",
            "patch_size",
            "num_channels",
        ):
            require(getattr(self, name) > 0, f"vision.{name} must be positive, got {getattr(self, name)}")
        require(
            self.hidden_size % self.num_attention_heads == 0,
            f"vision.hidden_size {self.hidden_size} must be divisible by num_attention_heads "
            f"{self.num_attention_heads}",
        )
        require(
            self.image_size % self.patch_size == 0,
            f"vision.image_size {self.image_size} must be a multiple of patch_size {self.patch_size}",
        )

    @property
    def num_patches(self) -> int:
        """Tokens per image: (image_size / patch_size) ** 2."""
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LanguageConfig:
    """Qwen3 language model. Only the first ``select_layer`` of ``num_hidden_layers`` layers are built."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    select_layer: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            require(getattr(self, name) > 0, f"language.{name} must be positive, got {getattr(self, name)}")
        require(
            1 <= self.select_layer <= self.num_hidden_layers,
            f"language.select_layer {self.select_layer} is beyond the layer count: expected "
            f"1..{self.num_hidden_layers}",
        )
        require(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"language.num_attention_heads {self.num_attention_heads} must be a multiple of "
            f"num_key_value_heads {self.num_key_value_heads}",
        )


@dataclass(frozen=True)
class BackboneConfig:
    """Eagle backbone: SigLIP + mlp1 + Qwen3 cut at select_layer + eagle_linear, and the prompt layout."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    project_to_dim: int | None = None  # eagle_linear output width; None -> identity
    cameras: tuple[str, ...] = ("head", "left_wrist", "right_wrist")  # view-major order
    history_frames: int = 1  # frames per camera, oldest first
    max_text_tokens: int = 64  # instruction tokens kept (after BOS), truncated beyond
    padding_side: str = "left"
    image_token: str = "<image>"
    pad_token: str = "<pad>"
    bos_token: str | None = "<bos>"
    tune_visual: bool = False
    tune_llm: bool = False
    cogvla: CogVLAConfig | None = None  # CogVLA prefix options (CogVLA); None -> GR00T prefix
    # Missing keys in an older config.json mean the seed's behaviour: the defaults below are the seed's,
    # the groot-n1.5 and tiny presets set the reference's.
    projector: str = "linear"  # mlp1: "linear" (one Linear) or "eagle" (Eagle's mlp1, keys mlp1.N)
    pixel_shuffle: bool = False  # eagle: 2x2 patches -> 1 token of 4x the width (downsample ratio 0.5)
    projector_layers: int = 2  # eagle: 2 = LayerNorm, Linear, GELU, Linear; 1 = Linear
    prompt: str = "plain"  # "plain": [BOS] <image> x N text; "chat": the checkpoint's chat template
    image_preprocessing: str = "bilinear"  # "eagle": bicubic antialiased uint8 resize, as Eagle's processor
    # (camera, top, left, height, width): the camera's frame is cut to this box (fractions of its height
    # and width) before the resize, so that a small workspace gets the model's pixels; others stay whole
    crops: tuple[tuple[str, float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        require(len(self.cameras) >= 1, "backbone.cameras must name at least one camera")
        for crop in self.crops:
            require(
                len(crop) == 5 and crop[0] in self.cameras,
                f"backbone.crops: each crop is [camera, top, left, height, width] with a camera of "
                f"{list(self.cameras)}, got {list(crop)}",
            )
            _, top, left, height, width = crop
            require(
                0 <= top < 1 and 0 <= left < 1 and 0 < height <= 1 - top and 0 < width <= 1 - left,
                f"backbone.crops: the box of {crop[0]} must lie inside the frame (fractions), "
                f"got {list(crop)}",
            )
        require(
            len({c[0] for c in self.crops}) == len(self.crops), "backbone.crops: one crop per camera at most"
        )
        require(
            len(set(self.cameras)) == len(self.cameras), f"backbone.cameras has duplicates: {self.cameras}"
        )
        require(self.history_frames >= 1, f"backbone.history_frames must be >= 1, got {self.history_frames}")
        require(
            self.max_text_tokens >= 1, f"backbone.max_text_tokens must be >= 1, got {self.max_text_tokens}"
        )
        require(
            self.padding_side in PADDING_SIDES,
            f"backbone.padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}",
        )
        require(
            self.project_to_dim is None or self.project_to_dim > 0,
            f"backbone.project_to_dim must be positive or null, got {self.project_to_dim}",
        )
        for name, valid in (
            ("projector", PROJECTORS),
            ("prompt", PROMPT_FORMATS),
            ("image_preprocessing", IMAGE_PREPROCESSING),
        ):
            value = getattr(self, name)
            require(value in valid, f"backbone.{name} must be one of {valid}, got {value!r}")
        require(
            self.projector_layers in (1, 2),
            f"backbone.projector_layers must be 1 or 2, got {self.projector_layers}",
        )
        require(
            not self.pixel_shuffle or self.projector == "eagle",
            "backbone.pixel_shuffle needs projector 'eagle' (Eagle's mlp1 reads the shuffled tokens)",
        )
        grid = self.vision.image_size // self.vision.patch_size
        require(
            not self.pixel_shuffle or grid % 2 == 0,
            f"backbone.pixel_shuffle needs an even patch grid, got {grid} x {grid}",
        )
        require(
            self.cogvla is None or not self.pixel_shuffle,
            "backbone.cogvla works on SigLIP's patch tokens: use it without pixel_shuffle",
        )
        if self.cogvla is not None:
            self.cogvla.check(self.language.select_layer, self.vision.image_size, self.vision.patch_size)

    @property
    def projector_input_dim(self) -> int:
        """mlp1's input width: the ViT width, x4 after the pixel shuffle."""
        return self.vision.hidden_size * (4 if self.pixel_shuffle else 1)

    @property
    def output_dim(self) -> int:
        """Width of backbone_features (eagle_linear output)."""
        return self.project_to_dim or self.language.hidden_size

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per observation: cameras x history frames x tokens per image."""
        return len(self.cameras) * self.history_frames * self.tokens_per_image

    @property
    def tokens_per_image(self) -> int:
        """Prompt tokens per image: the patches, or CogVLA's aggregation tokens when those are on."""
        n = self.vision.num_patches // (4 if self.pixel_shuffle else 1)
        return self.cogvla.tokens_per_image(n) if self.cogvla is not None else n


@dataclass(frozen=True)
class DiTConfig:
    """Cross-attention DiT: AdaLN blocks, cross-attention alternating with self-attention."""

    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 16
    output_dim: int = 64  # proj_out_2 width, the decoders' input
    interleave_self_attention: bool = True  # odd blocks are self-attention only
    ff_mult: int = 4
    timestep_channels: int = 256  # sinusoidal channels of the DiT timestep encoder
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in (
            "num_layers",
            "num_attention_heads",
            "attention_head_dim",
            "output_dim",
            "ff_mult",
            "timestep_channels",
        ):
            require(getattr(self, name) > 0, f"dit.{name} must be positive, got {getattr(self, name)}")
        require(self.timestep_channels % 2 == 0, "dit.timestep_channels must be even")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class ActionHeadConfig:
    """Flow-matching action head: vlln, vl_self_attention, encoders, DiT, flow-matching schedule."""

    input_embedding_dim: int = 64  # token width in the DiT (1536 in N1.5); must equal dit.inner_dim
    hidden_size: int = 64  # state-encoder hidden width (1024 in N1.5)
    max_state_dim: int = 64
    max_action_dim: int = 32
    action_dim: int = 16  # valid action dims: [left 7, right 7, claw 2]
    num_embodiments: int = 4
    num_future_tokens: int = 32
    add_pos_embed: bool = True
    max_seq_len: int = 1024
    vl_self_attention_layers: int = 2
    vl_self_attention_heads: int = 4
    dit: DiTConfig = field(default_factory=DiTConfig)
    num_timestep_buckets: int = 1000
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    tune_projector: bool = True
    tune_diffusion_model: bool = True
    # seed defaults (an older config.json without these keys); the presets set the reference's
    attention_bias: bool = False  # biases on to_q/to_k/to_v of the DiT and vl_self_attention
    use_vl_mask: bool = (
        True  # mask VL padding in vl_self_attention and cross-attention (the reference does not)
    )
    dropout: float = 0.0  # DiT and vl_self_attention dropout in training (reference 0.2)
    init_std: float = 0.0  # > 0: the reference's N(0, std) init of per-embodiment layers and embeddings

    def __post_init__(self) -> None:
        require(0.0 <= self.dropout < 1.0, f"action_head.dropout must be in [0, 1), got {self.dropout}")
        require(self.init_std >= 0.0, f"action_head.init_std must be >= 0, got {self.init_std}")
        for name in (
            "input_embedding_dim",
            "hidden_size",
            "max_state_dim",
            "max_action_dim",
            "action_dim",
            "num_embodiments",
            "max_seq_len",
            "vl_self_attention_heads",
            "num_timestep_buckets",
        ):
            require(
                getattr(self, name) > 0, f"action_head.{name} must be positive, got {getattr(self, name)}"
            )
        require(self.num_future_tokens >= 0, "action_head.num_future_tokens must be >= 0")
        require(self.vl_self_attention_layers >= 0, "action_head.vl_self_attention_layers must be >= 0")
        require(
            self.action_dim <= self.max_action_dim,
            f"action_head.action_dim {self.action_dim} is above max_action_dim {self.max_action_dim}",
        )
        require(
            self.dit.inner_dim == self.input_embedding_dim,
            f"action_head.input_embedding_dim {self.input_embedding_dim} must equal dit heads x head_dim "
            f"= {self.dit.inner_dim}",
        )
        require(self.input_embedding_dim % 2 == 0, "action_head.input_embedding_dim must be even")
        require(0.0 < self.noise_s <= 1.0, f"action_head.noise_s must be in (0, 1], got {self.noise_s}")
        require(self.noise_beta_alpha > 0 and self.noise_beta_beta > 0, "noise Beta parameters must be > 0")


@dataclass(frozen=True)
class DecoderConfig:
    """Action decoders, in one of two layouts.

    ``split`` (checkpoints trained here; the default of a config.json without ``layout``): a
    SharedBottomArmDecoder (+ optional left<->right cross-attention) and a claw MLP emit
    ``[left_arm_dim, right_arm_dim, claw_dim]``. ``reference`` (GR00T N1.5): one per-embodiment MLP
    ``action_decoder`` emits all ``max_action_dim`` dims, and ``groups`` says where each group of this
    robot sits in that vector.
    """

    hidden_size: int = 64
    split_arm_heads: bool = True
    use_cross_attention_arms: bool = True
    cross_attention_heads: int = 4
    left_arm_dim: int = 7
    right_arm_dim: int = 7
    claw_dim: int = 2
    layout: str = "split"
    # reference layout: (group, offset, size) in the action vector; () -> left, right, claw contiguous
    group_spans: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("hidden_size", "cross_attention_heads", "left_arm_dim", "right_arm_dim", "claw_dim"):
            require(getattr(self, name) > 0, f"decoder.{name} must be positive, got {getattr(self, name)}")
        require(
            self.hidden_size % self.cross_attention_heads == 0,
            f"decoder.hidden_size {self.hidden_size} must be divisible by cross_attention_heads "
            f"{self.cross_attention_heads}",
        )
        require(
            self.layout in DECODER_LAYOUTS,
            f"decoder.layout must be one of {DECODER_LAYOUTS}, got {self.layout!r}",
        )
        spans = tuple(tuple(s) for s in self.group_spans)
        object.__setattr__(self, "group_spans", spans)
        require(not spans or self.layout == "reference", "decoder.group_spans is for the reference layout")
        names = [s[0] for s in spans]
        require(len(set(names)) == len(names), f"decoder.group_spans names a group twice: {names}")
        for span in spans:
            require(
                len(span) == 3 and isinstance(span[0], str) and span[1] >= 0 and span[2] >= 1,
                f"decoder.group_spans entries are [group, offset >= 0, size >= 1], got {list(span)}",
            )

    @property
    def output_dim(self) -> int:
        """Width of the split decoders' output (left + right + claw)."""
        return self.left_arm_dim + self.right_arm_dim + self.claw_dim

    @property
    def groups(self) -> dict[str, slice]:
        """Where each group sits in the action vector: left arm, right arm, claw."""
        if self.group_spans:
            return {name: slice(offset, offset + size) for name, offset, size in self.group_spans}
        a, b = self.left_arm_dim, self.left_arm_dim + self.right_arm_dim
        return {"left_arm": slice(0, a), "right_arm": slice(a, b), "claw": slice(b, self.output_dim)}


@dataclass(frozen=True)
class NormalizationConfig:
    """Per-group normalisation modes, used for state (same joint layout) and actions."""

    left_arm: str = "min_max"
    right_arm: str = "min_max"
    claw: str = "min_max"
    extra: str = "min_max"  # state dims past the 16 action-layout dims
    use_quantiles: bool = False  # min_max bounds from q01/q99 instead of min/max
    clip: bool = True  # clip normalised min_max values to [-1, 1] (and actions before unnormalising)
    eps: float = 1e-8
    # per-dimension modes (an imported checkpoint's modality keys); when given they replace the group modes
    state_modes: tuple[str, ...] = ()
    action_modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("left_arm", "right_arm", "claw", "extra"):
            mode = getattr(self, name)
            require(
                mode in NORMALIZATION_MODES,
                f"normalization.{name} must be one of {NORMALIZATION_MODES}, got {mode!r}",
            )
        for name in ("state_modes", "action_modes"):
            bad = sorted({m for m in getattr(self, name) if m not in NORMALIZATION_MODES})
            require(not bad, f"normalization.{name}: unknown modes {bad}; expected {NORMALIZATION_MODES}")
        require(self.eps > 0, "normalization.eps must be > 0")


@dataclass(frozen=True)
class FusionExpertConfig:
    """Transformer of the ``deep_fusion`` (PI0) and ``kv_cache_expert`` (Alpamayo-R1) experts.

    One expert layer per built LLM layer (``select_layer``); heads, KV heads and head_dim are the LLM's so
    both sides share one attention head space and one RoPE. Widths of 0 take the LLM's.
    """

    hidden_size: int = 0  # expert token width (PI0: narrower than the VLM); 0 -> language.hidden_size
    intermediate_size: int = 0  # expert MLP width; 0 -> language.intermediate_size
    rms_norm_eps: float = 1e-6
    time_features: int = 32  # Fourier (kv_cache_expert) / sinusoidal (deep_fusion) time channels
    min_period: float = 4e-3  # PI0 sinusoidal time embedding periods
    max_period: float = 4.0
    max_frequency: float = 100.0  # highest Fourier frequency of the kv_cache_expert time encoding
    state_token: bool = True  # prepend a projected state token to the suffix

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size"):
            value = getattr(self, name)
            require(value >= 0, f"fusion_expert.{name} must be >= 0, got {value}")
        even = self.time_features > 0 and self.time_features % 2 == 0
        require(even, f"fusion_expert.time_features must be positive and even, got {self.time_features}")
        require(0 < self.min_period < self.max_period, "fusion_expert needs 0 < min_period < max_period")
        require(self.max_frequency > 0, "fusion_expert.max_frequency must be > 0")
        require(self.rms_norm_eps > 0, "fusion_expert.rms_norm_eps must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    """The whole policy."""

    name: str = "tiny"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    action_head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    expert: str = "dit_cross_attention"
    fusion_expert: FusionExpertConfig = field(default_factory=FusionExpertConfig)  # deep_fusion/kv_cache
    action_horizon: int = 16
    dt: float = 0.05  # seconds between actions
    num_inference_steps: int = 4
    embodiment_id: int = 0  # the embodiment the checkpoint serves (GR00T's new_embodiment is 31)

    def __post_init__(self) -> None:
        require(bool(self.name), "name must not be empty")
        require(
            0 <= self.embodiment_id < self.action_head.num_embodiments,
            f"embodiment_id must be in 0..{self.action_head.num_embodiments - 1}, got {self.embodiment_id}",
        )
        require(self.action_horizon >= 1, f"action_horizon must be >= 1, got {self.action_horizon}")
        require(self.dt > 0, f"dt must be > 0, got {self.dt}")
        require(
            self.num_inference_steps >= 1, f"num_inference_steps must be >= 1, got {self.num_inference_steps}"
        )
        if self.decoder.layout == "split":
            require(
                self.decoder.output_dim == self.action_head.action_dim,
                f"decoder output {self.decoder.output_dim} (left+right+claw) must equal "
                f"action_head.action_dim {self.action_head.action_dim}",
            )
        else:
            require(
                self.action_head.action_dim == self.action_head.max_action_dim,
                f"the reference decoder predicts every padded dim: action_head.action_dim "
                f"{self.action_head.action_dim} must equal max_action_dim {self.action_head.max_action_dim}",
            )
        for name, (offset, size) in self.action_layout.items():
            require(
                offset + size <= self.action_width,
                f"decoder group {name!r} at ({offset}, {size}) does not fit the action width "
                f"{self.action_width}",
            )
        require(
            self.action_head.max_seq_len >= self.action_horizon,
            f"action_head.max_seq_len {self.action_head.max_seq_len} < action_horizon {self.action_horizon}",
        )
        require(self.decoder.hidden_size > 0 and self.action_head.dit.output_dim > 0, "decoder sizes")
        cogvla = self.backbone.cogvla
        require(
            cogvla is None or not cogvla.prune_layers or self.expert == "dit_cross_attention",
            f"cogvla.prune_layers needs the dit_cross_attention expert: '{self.expert}' runs the LLM layers "
            "itself for its per-layer K/V, so pruning inside the backbone's LLM would not apply",
        )

    @property
    def action_width(self) -> int:
        """Width of the unnormalised action vector the policy returns (16 split, max_action_dim reference)."""
        return self.action_head.action_dim

    @property
    def action_layout(self) -> dict[str, tuple[int, int]]:
        """group -> (offset, size) in the action vector of width :attr:`action_width`, for the runtime's
        joint-group map (``ModelInfo.action_layout``)."""
        return {name: (sl.start, sl.stop - sl.start) for name, sl in self.decoder.groups.items()}
