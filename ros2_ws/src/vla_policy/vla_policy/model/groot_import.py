"""Import GR00T N1.5 checkpoints (``nvidia/GR00T-N1.5-3B`` and its fine-tunes) into this stack.

An official checkpoint directory holds ``config.json`` (``model_type: gr00t_n1_5``), the weights
(``model.safetensors`` or ``model-*.safetensors`` + ``model.safetensors.index.json``),
``experiment_cfg/metadata.json`` (per-embodiment, per-modality statistics) and, beside it or given
separately, the Eagle processor folder ``eagle2_hg_model/`` (Eagle's ``config.json``, the Qwen3 tokenizer
files, ``chat_template.json``, ``processor_config.json``, ``preprocessor_config.json``). A small YAML that
the user writes maps the checkpoint's modality keys onto this robot::

    embodiment_tag: new_embodiment      # the metadata.json entry, and the embodiment id (31)
    dt: 0.05                            # seconds between actions (optional, default 0.05)
    video:                              # the checkpoint's cameras in its order -> this robot's cameras
      video.ego_view: head
      video.left_wrist_view: left_wrist
      video.right_wrist_view: right_wrist
    state:                              # state keys in the checkpoint's order -> left_arm/right_arm/claw
      state.left_arm: left_arm          # (state groups must come in that order, each contiguous)
      state.right_arm: right_arm
      state.claw: claw
    action:                             # action keys in the checkpoint's order -> group, or none
      action.left_arm: left_arm
      action.right_arm: right_arm
      action.claw: claw
    normalization:                      # optional, per key: min_max (default), q99, mean_std, identity
      state.claw: identity

The import is strict: every weight of the checkpoint has a place in the model and every weight of the
model comes from the checkpoint, at its shape; the only keys left aside are the two the cut backbone
cannot use (``language_model.lm_head``, SigLIP's pooling ``head``), by name. The model is built on the
meta device and the weights are assigned (no random initialisation of 3 B parameters). Every failure is
a :class:`GrootImportError` whose message is one line naming the first mismatch.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_policy.model.checkpoint import CheckpointError, read_state_dict, save_checkpoint, weight_files
from vla_policy.model.config import (
    ActionHeadConfig,
    BackboneConfig,
    DecoderConfig,
    DiTConfig,
    LanguageConfig,
    ModelConfig,
    NormalizationConfig,
    VisionConfig,
)
from vla_policy.model.normalization import FeatureStats, Normalizer
from vla_policy.model.tokenizer import CHAT_FILES, PROCESSOR_DIR, EagleChatTokenizer
from vla_policy.strict_config import ConfigError, unknown_key_message

logger = logging.getLogger(__name__)

METADATA = Path("experiment_cfg") / "metadata.json"
EAGLE_DIR = "eagle2_hg_model"
# the processor files copied into an imported checkpoint (besides the tokenizer's vocab and merges)
PROCESSOR_FILES = (
    *CHAT_FILES,
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)
# GR00T N1.5's embodiment tags -> ids (its EMBODIMENT_TAG_MAPPING, as lerobot 0.4.4 carries it over)
EMBODIMENT_IDS = {
    "new_embodiment": 31,
    "oxe_droid": 17,
    "agibot_genie1": 26,
    "gr1": 24,
    "so100": 2,
    "unitree_g1": 3,
}
GROUPS = ("left_arm", "right_arm", "claw")
# official keys the cut backbone has no use for: the LLM's output head (no token is generated) and
# SigLIP's attention-pooling head (Eagle reads the patch tokens)
UNUSED_KEYS = (
    re.compile(r"backbone\.eagle_model\.language_model\.lm_head\.weight"),
    re.compile(r"backbone\.eagle_model\.vision_model\.vision_model\.head\..+"),
)
# official prefix -> this model's: transformers 5's SiglipVisionModel holds the embeddings and encoder
# itself, where GR00T's (transformers 4) wraps them in a second ``vision_model``
RENAMES = (("backbone.eagle_model.vision_model.vision_model.", "backbone.eagle_model.vision_model."),)


class GrootImportError(ValueError):
    """The GR00T checkpoint, its processor files or the modality map cannot be imported (one line)."""


@dataclass(frozen=True)
class ModalityMap:
    """The user's YAML: the checkpoint's modality keys -> this robot's cameras and joint groups."""

    embodiment_tag: str
    video: tuple[tuple[str, str], ...]  # (checkpoint key, camera), in the checkpoint's order
    state: tuple[tuple[str, str], ...]  # (checkpoint key, group or "none")
    action: tuple[tuple[str, str], ...]
    normalization: dict[str, str]
    dt: float = 0.05

    @classmethod
    def from_yaml(cls, path: Path) -> ModalityMap:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise GrootImportError(f"{path}: cannot read the modality map ({_first_line(exc)})") from exc
        if not isinstance(data, dict):
            raise GrootImportError(f"{path}: expected a mapping with embodiment_tag, video, state, action")
        known = {"embodiment_tag", "dt", "video", "state", "action", "normalization"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GrootImportError(unknown_key_message(str(unknown[0]), known, str(path)))
        for key in ("embodiment_tag", "video", "state", "action"):
            if key not in data:
                raise GrootImportError(f"{path}: missing {key!r}")

        def pairs(section: str) -> tuple[tuple[str, str], ...]:
            value = data[section]
            if not isinstance(value, dict) or not value:
                raise GrootImportError(f"{path}: {section} must map checkpoint keys to names")
            out = []
            for k, v in value.items():
                prefix = f"{section}."
                if not str(k).startswith(prefix):
                    raise GrootImportError(f"{path}: {section} key {k!r} must start with {prefix!r}")
                target = "none" if v is None else str(v)
                if section != "video" and target not in (*GROUPS, "none"):
                    raise GrootImportError(
                        f"{path}: {k} maps to {target!r}; expected one of {', '.join(GROUPS)} or none"
                    )
                out.append((str(k), target))
            return tuple(out)

        norm = data.get("normalization") or {}
        if not isinstance(norm, dict):
            raise GrootImportError(f"{path}: normalization must map keys to modes")
        state, action = pairs("state"), pairs("action")
        listed = {k for k, _ in state + action}
        for key in norm:
            if key not in listed:
                raise GrootImportError(unknown_key_message(str(key), listed, f"{path}: normalization"))
        return cls(
            embodiment_tag=str(data["embodiment_tag"]),
            video=pairs("video"),
            state=state,
            action=action,
            normalization={str(k): str(v) for k, v in norm.items()},
            dt=float(data.get("dt", 0.05)),
        )


@dataclass(frozen=True)
class GrootSource:
    """An official checkpoint, read and checked: everything but the weights."""

    path: Path
    processor: Path
    config: ModelConfig
    normalizer: Normalizer
    weight_files: list[Path]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise GrootImportError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GrootImportError(f"{path}: unreadable ({_first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise GrootImportError(f"{path}: expected a JSON object ({what})")
    return data


def _get(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise GrootImportError(f"{where}: missing {key!r}")
    return cfg[key]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise GrootImportError(message)


def processor_dir(src: Path, processor: Path | None) -> Path:
    """The Eagle processor folder: ``processor`` when given, else ``src/eagle2_hg_model``."""
    folder = Path(processor) if processor is not None else Path(src) / EAGLE_DIR
    if not folder.is_dir():
        raise GrootImportError(
            f"{folder}: no Eagle processor folder (the tokenizer, chat template and Eagle config.json); "
            f"pass --processor DIR"
        )
    return folder


def build_config(
    groot: dict[str, Any],
    eagle: dict[str, Any],
    proc: dict[str, Any],
    modality: ModalityMap,
    dims: dict[str, dict[str, int]],
    name: str,
) -> ModelConfig:
    """GR00T's config.json + Eagle's config.json + processor_config.json -> ModelConfig (reference layout)."""
    where = "config.json"
    _require(
        groot.get("model_type") == "gr00t_n1_5",
        f"{where}: model_type is {groot.get('model_type')!r}; expected 'gr00t_n1_5'",
    )
    bb = _get(groot, "backbone_cfg", where)
    ah = _get(groot, "action_head_cfg", where)
    dit = _get(ah, "diffusion_model_cfg", f"{where}:action_head_cfg")
    vl = _get(ah, "vl_self_attention_cfg", f"{where}:action_head_cfg")
    v = _get(eagle, "vision_config", "eagle config.json")
    t = _get(eagle, "text_config", "eagle config.json")
    for cond, msg in (
        (
            v.get("model_type") == "siglip_vision_model",
            "vision_config.model_type must be siglip_vision_model",
        ),
        ((t.get("architectures") or [""])[0] == "Qwen3ForCausalLM", "text_config must be Qwen3ForCausalLM"),
        (eagle.get("select_layer", -1) == -1, "select_layer must be -1 (SigLIP's last layer)"),
        (eagle.get("downsample_ratio", 0.5) == 0.5, "downsample_ratio must be 0.5"),
        (
            not eagle.get("use_backbone_lora") and not eagle.get("use_llm_lora"),
            "LoRA wrappers are not supported",
        ),
        (not bb.get("reproject_vision", False), "backbone_cfg.reproject_vision is not supported"),
        (dit.get("norm_type", "ada_norm") == "ada_norm", "diffusion_model_cfg.norm_type must be ada_norm"),
        (dit.get("positional_embeddings") is None, "diffusion_model_cfg.positional_embeddings must be null"),
        (vl.get("positional_embeddings") is None, "vl_self_attention_cfg.positional_embeddings must be null"),
        (
            dit.get("activation_fn", "gelu-approximate") == "gelu-approximate",
            "DiT activation must be gelu-approximate",
        ),
        (ah.get("use_vlln", True), "action_head_cfg.use_vlln must be true"),
        (dit.get("dropout", 0.1) == vl.get("dropout", 0.1), "DiT and vl_self_attention dropouts differ"),
    ):
        _require(cond, f"unsupported GR00T config: {msg}")
    image_size = int(eagle.get("force_image_size") or v["image_size"])
    vision = VisionConfig(
        hidden_size=int(v["hidden_size"]),
        intermediate_size=int(v["intermediate_size"]),
        num_hidden_layers=int(v["num_hidden_layers"]),
        num_attention_heads=int(v["num_attention_heads"]),
        image_size=image_size,
        patch_size=int(v["patch_size"]),
        num_channels=int(v.get("num_channels", 3)),
        layer_norm_eps=float(v.get("layer_norm_eps", 1e-6)),
        hidden_act=str(v.get("hidden_act", "gelu_pytorch_tanh")),
    )
    language = LanguageConfig(
        vocab_size=int(t["vocab_size"]),
        hidden_size=int(t["hidden_size"]),
        intermediate_size=int(t["intermediate_size"]),
        num_hidden_layers=int(t["num_hidden_layers"]),
        select_layer=int(bb.get("select_layer", 12)),
        num_attention_heads=int(t["num_attention_heads"]),
        num_key_value_heads=int(t.get("num_key_value_heads", t["num_attention_heads"])),
        head_dim=int(t.get("head_dim", int(t["hidden_size"]) // int(t["num_attention_heads"]))),
        max_position_embeddings=int(t.get("max_position_embeddings", 40960)),
        rope_theta=float(t.get("rope_theta", 1_000_000.0)),
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
    )
    backbone = BackboneConfig(
        vision=vision,
        language=language,
        project_to_dim=bb.get("project_to_dim"),
        cameras=tuple(cam for _, cam in modality.video),
        history_frames=1,
        padding_side="left",
        tune_visual=False,  # GR00T N1.5 fine-tuning defaults (tune_llm/tune_visual off)
        tune_llm=False,
        projector="eagle",
        pixel_shuffle=bool(eagle.get("use_pixel_shuffle", True)),
        projector_layers=int(eagle.get("mlp_connector_layers", 2)),
        prompt="chat",
        image_preprocessing="eagle",
    )
    tokens = int(proc.get("tokens_per_tile", 0))
    _require(
        tokens == backbone.tokens_per_image,
        f"processor_config.json: tokens_per_tile {tokens} but the vision geometry gives "
        f"{backbone.tokens_per_image} image tokens per image",
    )
    dim = backbone.output_dim
    _require(
        int(ah.get("backbone_embedding_dim", dim)) == dim and int(dit.get("cross_attention_dim", dim)) == dim,
        f"unsupported GR00T config: the action head reads width {ah.get('backbone_embedding_dim')} but the "
        f"backbone gives {dim}",
    )
    vl_heads = int(vl.get("num_attention_heads", 8))
    _require(
        vl_heads * int(vl.get("attention_head_dim", 64)) == dim,
        f"unsupported GR00T config: vl_self_attention width {vl_heads} x {vl.get('attention_head_dim')} "
        f"!= {dim}",
    )
    max_action = int(ah.get("max_action_dim", ah["action_dim"]))
    _require(
        int(ah["action_dim"]) == max_action,
        f"unsupported GR00T config: action_dim {ah['action_dim']} != max_action_dim {max_action}",
    )
    head = ActionHeadConfig(
        input_embedding_dim=int(ah["input_embedding_dim"]),
        hidden_size=int(ah["hidden_size"]),
        max_state_dim=int(ah.get("max_state_dim", 64)),
        max_action_dim=max_action,
        action_dim=max_action,
        num_embodiments=int(ah.get("max_num_embodiments", 32)),
        num_future_tokens=int(ah.get("num_target_vision_tokens", 32)),
        add_pos_embed=bool(ah.get("add_pos_embed", True)),
        max_seq_len=int(ah.get("max_seq_len", 1024)),
        vl_self_attention_layers=int(vl.get("num_layers", 12)),
        vl_self_attention_heads=vl_heads,
        dit=DiTConfig(
            num_layers=int(dit.get("num_layers", 12)),
            num_attention_heads=int(dit.get("num_attention_heads", 8)),
            attention_head_dim=int(dit.get("attention_head_dim", 64)),
            output_dim=int(dit.get("output_dim", 26)),
            interleave_self_attention=bool(dit.get("interleave_self_attention", False)),
            norm_eps=float(dit.get("norm_eps", 1e-5)),
        ),
        num_timestep_buckets=int(ah.get("num_timestep_buckets", 1000)),
        noise_beta_alpha=float(ah.get("noise_beta_alpha", 1.5)),
        noise_beta_beta=float(ah.get("noise_beta_beta", 1.0)),
        noise_s=float(ah.get("noise_s", 0.999)),
        tune_projector=True,  # GR00T N1.5 fine-tuning defaults
        tune_diffusion_model=True,
        attention_bias=bool(dit.get("attention_bias", True)),
        use_vl_mask=False,
        dropout=float(dit.get("dropout", 0.1)),
        init_std=0.02,
    )
    spans = _group_spans(modality.action, dims["action"], "action")
    decoder = DecoderConfig(hidden_size=int(ah["hidden_size"]), layout="reference", group_spans=spans)
    state_spans = _group_spans(modality.state, dims["state"], "state")
    order = [g for g, _, _ in state_spans]
    _require(
        order == [g for g in GROUPS if g in order]
        and all(a[1] + a[2] == b[1] for a, b in itertools.pairwise(state_spans))
        and (not state_spans or state_spans[0][1] == 0),
        f"modality map: the state groups must come first, in the order left_arm, right_arm, claw, each "
        f"contiguous (this robot's state vector); got {[list(s) for s in state_spans]}",
    )
    return ModelConfig(
        name=name,
        backbone=backbone,
        action_head=head,
        decoder=decoder,
        normalization=NormalizationConfig(
            clip=False,  # GR00T's min_max has no clip
            state_modes=_modes(modality.state, modality, dims["state"]),
            action_modes=_modes(modality.action, modality, dims["action"]),
        ),
        action_horizon=int(groot.get("action_horizon", ah.get("action_horizon", 16))),
        dt=modality.dt,
        num_inference_steps=int(ah.get("num_inference_timesteps") or 4),
        embodiment_id=_embodiment_id(modality.embodiment_tag),
    )


def _group_spans(
    pairs: tuple[tuple[str, str], ...], dims: dict[str, int], kind: str
) -> tuple[tuple[str, int, int], ...]:
    """(group, offset, size) of each group: its keys must be contiguous in the checkpoint's order."""
    spans: dict[str, list[int]] = {}
    offset = 0
    last = None
    for key, group in pairs:
        size = dims[key]
        if group != "none":
            if group in spans and last != group:
                raise GrootImportError(f"modality map: {kind} group {group!r} is split by other keys")
            span = spans.setdefault(group, [offset, 0])
            span[1] += size
        last = group
        offset += size
    return tuple((g, s[0], s[1]) for g, s in spans.items())


def _modes(
    pairs: tuple[tuple[str, str], ...], modality: ModalityMap, dims: dict[str, int]
) -> tuple[str, ...]:
    out: list[str] = []
    for key, _ in pairs:
        out += [modality.normalization.get(key, "min_max")] * dims[key]
    return tuple(out)


def _embodiment_id(tag: str) -> int:
    if tag not in EMBODIMENT_IDS:
        raise GrootImportError(f"unknown embodiment_tag {tag!r}; GR00T N1.5 knows {sorted(EMBODIMENT_IDS)}")
    return EMBODIMENT_IDS[tag]


def read_statistics(
    metadata: dict[str, Any], modality: ModalityMap, path: Path
) -> tuple[dict[str, FeatureStats], dict[str, dict[str, int]]]:
    """The per-modality statistics of the embodiment concatenated in the modality map's order, and the
    dims of each key (``{"state": {key: dims}, "action": {...}}``)."""
    tag = modality.embodiment_tag
    if tag not in metadata:
        raise GrootImportError(f"{path}: no entry for embodiment {tag!r}; it has {sorted(metadata)}")
    stats = _get(metadata[tag], "statistics", f"{path}:{tag}")
    out = {}
    dims: dict[str, dict[str, int]] = {}
    for kind, pairs in (("state", modality.state), ("action", modality.action)):
        table = _get(stats, kind, f"{path}:{tag}.statistics")
        mapped = {k.split(".", 1)[1] for k, _ in pairs}
        unmapped = sorted(set(table) - mapped)
        if unmapped:
            raise GrootImportError(
                f"modality map: {kind}.{unmapped[0]} of {path} is not mapped (map it, or to none)"
            )
        parts: dict[str, list[np.ndarray]] = {}
        dims[kind] = {}
        for key, _ in pairs:
            name = key.split(".", 1)[1]
            if name not in table:
                raise GrootImportError(f"modality map: {key} is not in {path} ({kind} keys: {sorted(table)})")
            feature = FeatureStats.from_dict(
                {s: table[name][s] for s in ("min", "max", "mean", "std", "q01", "q99")}, f"{path}:{key}"
            )
            dims[kind][key] = feature.dim
            for s in ("min", "max", "mean", "std", "q01", "q99"):
                parts.setdefault(s, []).append(getattr(feature, s))
        out[kind] = FeatureStats(**{s: np.concatenate(v) for s, v in parts.items()})
    return out, dims


def _pad_stats(stats: FeatureStats, dim: int, what: str) -> FeatureStats:
    """Pad to ``dim`` with identity statistics (the padded dims are not normalised)."""
    if stats.dim > dim:
        raise GrootImportError(f"the modality map gives {stats.dim} {what} dims, more than the model's {dim}")
    pad = FeatureStats.identity(dim - stats.dim)
    return FeatureStats(
        **{
            s: np.concatenate([getattr(stats, s), getattr(pad, s)])
            for s in ("min", "max", "mean", "std", "q01", "q99")
        }
    )


def read_source(
    src: Path, modality: ModalityMap, processor: Path | None = None, name: str | None = None
) -> GrootSource:
    """Read and check everything of an official checkpoint but its weights."""
    src = Path(src)
    if not src.is_dir():
        raise GrootImportError(f"{src}: GR00T checkpoint directory not found")
    groot = _read_json(src / "config.json", "GR00T config")
    metadata = _read_json(src / METADATA, "per-embodiment statistics")
    proc_dir = processor_dir(src, processor)
    for file in CHAT_FILES:
        if not (proc_dir / file).is_file():
            raise GrootImportError(f"{proc_dir / file}: missing (Eagle processor files)")
    eagle = _read_json(proc_dir / "config.json", "Eagle config")
    proc = _read_json(proc_dir / "processor_config.json", "Eagle processor config")
    pre = _read_json(proc_dir / "preprocessor_config.json", "Eagle image processor config")
    try:
        stats, dims = read_statistics(metadata, modality, src / METADATA)
    except ValueError as exc:
        if isinstance(exc, GrootImportError):
            raise
        raise GrootImportError(_first_line(exc)) from exc
    try:
        config = build_config(groot, eagle, proc, modality, dims, name or f"gr00t-n1.5-{src.resolve().name}")
    except ConfigError as exc:
        raise GrootImportError(f"{src}: {_first_line(exc)}") from exc
    size = pre.get("size", {})
    _require(
        int(size.get("height", 0)) == int(size.get("width", -1)) == config.backbone.vision.image_size,
        f"{proc_dir / 'preprocessor_config.json'}: size {size} but SigLIP reads "
        f"{config.backbone.vision.image_size} x {config.backbone.vision.image_size} images",
    )
    _require(
        pre.get("resample", 3) == 3
        and list(pre.get("image_mean", [0.5] * 3)) == [0.5] * 3
        and list(pre.get("image_std", [0.5] * 3)) == [0.5] * 3,
        f"{proc_dir / 'preprocessor_config.json'}: only bicubic resizing and mean = std = 0.5 are supported",
    )
    h = config.action_head
    normalizer = Normalizer(
        {
            "state": _pad_stats(stats["state"], h.max_state_dim, "state"),
            "action": _pad_stats(stats["action"], h.max_action_dim, "action"),
        },
        config.normalization,
    )
    try:
        files = weight_files(src)
    except CheckpointError as exc:
        raise GrootImportError(_first_line(exc)) from exc
    return GrootSource(src, proc_dir, config, normalizer, files)


def map_weights(
    official: dict[str, torch.Tensor], expected: dict[str, torch.Size], where: str
) -> dict[str, torch.Tensor]:
    """Official key -> this model's key, strictly: the first unmapped, missing or misshapen key is the
    one-line error. The modules are named as GR00T's; only :data:`RENAMES` prefixes differ."""
    out: dict[str, torch.Tensor] = {}
    for official_key in sorted(official):
        if any(p.fullmatch(official_key) for p in UNUSED_KEYS):
            continue
        key = official_key
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        if key not in expected:
            raise GrootImportError(f"{where}: checkpoint key {official_key!r} has no place in the model")
        tensor = official[official_key]
        if tuple(tensor.shape) != tuple(expected[key]):
            raise GrootImportError(
                f"{where}: {official_key} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[key])}"
            )
        out[key] = tensor
    missing = sorted(set(expected) - set(out))
    if missing:
        raise GrootImportError(
            f"{where}: model key {missing[0]!r} is not in the checkpoint ({len(missing)} missing)"
        )
    return out


def expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    """This model's state-dict keys and shapes, from a model built on the meta device (no memory)."""
    from vla_policy.model.policy import VLAModel, parameters_on_meta

    with parameters_on_meta():
        model = VLAModel(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def load_groot(
    src: Path,
    modality: ModalityMap,
    processor: Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
):  # -> VLAPolicy (imported lazily: policy imports the backends)
    """An official checkpoint as a ready VLAPolicy, without writing anything."""
    from vla_policy.model.policy import VLAPolicy

    source = read_source(src, modality, processor)
    try:
        official = read_state_dict(source.weight_files, dtype)
    except CheckpointError as exc:
        raise GrootImportError(_first_line(exc)) from exc
    weights = map_weights(official, expected_shapes(source.config), str(src))
    del official
    try:
        tokenizer = EagleChatTokenizer(source.processor)
    except (OSError, ValueError) as exc:
        raise GrootImportError(_first_line(exc)) from exc
    policy = VLAPolicy(
        source.config,
        normalizer=source.normalizer,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        seed=None,
        weights=weights,
        weights_source=str(src),
    )
    policy.random_init = False
    return policy


def import_groot(
    src: Path,
    out: Path,
    modality: ModalityMap,
    processor: Path | None = None,
    dtype: torch.dtype = torch.float32,
    max_shard_bytes: int | None = 4 << 30,
) -> Path:
    """Convert an official checkpoint into a checkpoint directory of this repository (``out``)."""
    policy = load_groot(src, modality, processor, dtype)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GrootImportError(f"{out}: exists and is not empty")
    save_checkpoint(
        out,
        policy.config,
        policy.model.state_dict(),
        policy.normalizer,
        random_init=False,
        max_shard_bytes=max_shard_bytes,
        extra={"imported_from": {"format": "gr00t_n1_5", "path": str(Path(src).resolve())}},
    )
    target = out / PROCESSOR_DIR
    target.mkdir()
    source_dir = processor_dir(src, processor)
    for name in PROCESSOR_FILES:
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, target / name)
    logger.info("imported %s -> %s", src, out)
    return out
