"""Build the GR00T N1.5 reference fixture of the parity test, with lerobot's independent implementation.

The reference is ``lerobot.policies.groot`` from lerobot 0.4.4 (PyPI), run at a tiny config. It needs a
venv of its own (lerobot pins torch<2.11 and transformers<5; this repository runs torch 2.13 and
transformers 5), so that its code runs as released. Set it up once (CPU torch first, then everything
with ``--no-deps`` so that pip never pulls another torch)::

    python3.11 -m venv /work/ref-venv
    /work/ref-venv/bin/pip install torch==2.13.0
    /work/ref-venv/bin/pip install --no-deps lerobot==0.4.4 transformers==4.57.6 "tokenizers>=0.22,<0.23" \
        huggingface_hub==0.35.3 diffusers==0.35.2 peft==0.17.1 torchvision==0.28.0 accelerate safetensors \
        regex pyyaml requests urllib3 idna certifi charset-normalizer tqdm "packaging<26" numpy \
        importlib_metadata zipp psutil dm-tree einops pillow draccus==0.10.0 mergedeep pyyaml-include \
        toml typing-inspect mypy-extensions "datasets>=4,<5" pyarrow pandas dill multiprocess xxhash \
        fsspec python-dateutil pytz tzdata six httpx imageio pyserial deepdiff orderly-set cachebox av

and run, from the repository root::

    /work/ref-venv/bin/python scripts/make_groot_reference_fixture.py \
        --out ros2_ws/src/vla_policy/tests/fixtures/groot_n15_tiny

What it writes (all small, committed; ``test_groot_reference_parity.py`` reads it):

- ``checkpoint/``: the reference model saved by its own ``save_pretrained`` in the official layout
  (``config.json``, sharded ``model-*.safetensors`` + index, weights rounded to bf16 and stored as bf16),
  ``experiment_cfg/metadata.json`` (per-modality statistics of ``new_embodiment``), and
  ``eagle2_hg_model/``: the Eagle processor files in the official format (a byte-level BPE tokenizer built
  here as ``vocab.json`` + ``merges.txt`` + ``tokenizer_config.json`` + ``added_tokens.json`` +
  ``special_tokens_map.json``, ``chat_template.json``, ``preprocessor_config.json``,
  ``processor_config.json`` and the Eagle ``config.json``); the real Qwen3 tokenizer cannot be downloaded
  here, so both sides use this one.
- ``modality.yaml``: the checkpoint's modality keys mapped onto the bimanual robot.
- ``reference.safetensors`` + ``reference.json``: inputs (three uint8 camera images, the raw state, the
  instruction, the noise, the training chunk, its noise and time) and the reference's outputs (the
  prompt ids, the pixel values, the velocity of the first denoising step, the normalised action chunk,
  the unnormalised chunk, the training loss), all in fp32.

No lerobot code is copied: the script imports it. Two things stand in for what cannot exist here:
torchvision's compiled ops on PyPI link CUDA libraries, so its import-time fake-kernel registrations of
ops that did not load are skipped (no such op is used); and SigLIP is switched from flash-attention (which
Eagle forces) to PyTorch's SDPA on this CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("make_groot_reference_fixture")

CAMERAS = ("head", "left_wrist", "right_wrist")
INSTRUCTION = "pick up the red cube and hand it over"
SHORT_INSTRUCTION = "pick up the cube"
STATE_DIM = 16  # [left_arm 7, right_arm 7, claw 2]
EMBODIMENT_TAG = "new_embodiment"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>", "<img>", "</img>")
TOKENS_PER_TILE = 4  # 32 / 8 = 4 x 4 patches, pixel shuffle 0.5 -> 2 x 2

# Qwen-style chat template of the fixture: image items become <image-N> placeholders, which the Eagle
# processor expands into <image N><img><IMG_CONTEXT> x tokens</img>
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- set ns = namespace(images=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set ns.images = ns.images + 1 -%}"
    "{{- '<image-' + ns.images|string + '>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def skip_unloadable_torchvision_fakes() -> None:
    """Import torchvision although its compiled ops (CUDA-linked on PyPI) cannot load on a CPU torch."""
    original = torch.library.register_fake

    def tolerant(op, func=None, /, **kwargs):  # type: ignore[no-untyped-def]
        def register(fn):  # type: ignore[no-untyped-def]
            try:
                return original(op, fn, **kwargs)
            except RuntimeError:  # the op was never defined because torchvision's _C did not load
                return fn

        return register if func is None else register(func)

    torch.library.register_fake = tolerant
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original


@contextlib.contextmanager
def sdpa_instead_of_flash_attention() -> Iterator[None]:
    """Eagle builds SigLIP with flash-attention 2 (CUDA only); on this CPU it gets PyTorch's SDPA."""
    from transformers.modeling_utils import PreTrainedModel

    original = PreTrainedModel._check_and_adjust_attn_implementation

    def adjusted(self, attn_implementation, is_init_check=False):  # type: ignore[no-untyped-def]
        if attn_implementation == "flash_attention_2":
            attn_implementation = "sdpa"
        return original(self, attn_implementation, is_init_check)

    PreTrainedModel._check_and_adjust_attn_implementation = adjusted
    try:
        yield
    finally:
        PreTrainedModel._check_and_adjust_attn_implementation = original


FULL_VISION = {  # SigLIP so400m at 224/14, as GR00T N1.5's Eagle 2.5
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
}
FULL_TEXT = {  # Qwen3-1.7B
    "vocab_size": 151680,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
}


def full_groot_config() -> dict:
    """GR00T N1.5-3B's config.json values (the released model's shapes)."""
    cfg = groot_config()
    cfg["backbone_cfg"]["select_layer"] = 12
    head = cfg["action_head_cfg"]
    head.update(
        backbone_embedding_dim=2048,
        hidden_size=1024,
        input_embedding_dim=1536,
        max_state_dim=64,
        max_seq_len=1024,
        num_target_vision_tokens=32,
    )
    head["diffusion_model_cfg"].update(
        attention_head_dim=48,
        cross_attention_dim=2048,
        num_attention_heads=32,
        num_layers=16,
        output_dim=1024,
    )
    head["vl_self_attention_cfg"].update(attention_head_dim=64, num_attention_heads=32, num_layers=4)
    return cfg


def write_eagle_config(root: Path, image_token_id: int, vision: dict, text: dict) -> None:
    """Eagle's config.json (what lerobot builds the VLM from), tiny or full size."""
    (root / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Eagle25VLForConditionalGeneration"],
                "auto_map": {
                    "AutoConfig": "configuration_eagle2_5_vl.Eagle25VLConfig",
                    "AutoModel": "modeling_eagle2_5_vl.Eagle25VLForConditionalGeneration",
                },
                "model_type": "eagle_2_5_vl",
                "select_layer": -1,
                "downsample_ratio": 0.5,
                "use_pixel_shuffle": True,
                "mlp_connector_layers": 2,
                "force_image_size": vision["image_size"],
                "image_token_index": image_token_id,
                "initializer_range": 0.02,
                "_attn_implementation": "sdpa",
                "vision_config": {
                    "model_type": "siglip_vision_model",
                    "num_channels": 3,
                    "layer_norm_eps": 1e-6,
                    "hidden_act": "gelu_pytorch_tanh",
                    "vision_use_head": True,
                    **vision,
                },
                "text_config": {
                    "architectures": ["Qwen3ForCausalLM"],
                    "model_type": "qwen3",
                    "rope_theta": 1000000.0,
                    "rms_norm_eps": 1e-6,
                    "attention_bias": False,
                    "_attn_implementation": "sdpa",
                    **text,
                },
            },
            indent=1,
        )
    )


def write_processor_files(root: Path) -> dict[str, int]:
    """The Eagle processor folder in the official file format; returns the special token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root.mkdir(parents=True, exist_ok=True)
    corpus = [
        INSTRUCTION,
        "pick up the cube",
        "put the red block in the box",
        "hand the cube to the other arm",
        "You are a helpful assistant.",
        "system user assistant image",
        "['pick up the red cube']",
    ] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    tok.model.save(str(root))  # vocab.json + merges.txt, the files Qwen2Tokenizer reads
    base = tok.get_vocab_size()
    ids = {t: base + i for i, t in enumerate(SPECIAL_TOKENS)}
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in ids.items()
    }
    (root / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "added_tokens_decoder": added,
                "additional_special_tokens": [
                    "<|im_start|>",
                    "<|im_end|>",
                    "<IMG_CONTEXT>",
                    "<img>",
                    "</img>",
                ],
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "errors": "replace",
                "clean_up_tokenization_spaces": False,
                "split_special_tokens": False,
                "model_max_length": 4096,
            },
            indent=1,
        )
    )
    (root / "added_tokens.json").write_text(json.dumps(ids, indent=1))
    (root / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "additional_special_tokens": [
                    "<|im_start|>",
                    "<|im_end|>",
                    "<IMG_CONTEXT>",
                    "<img>",
                    "</img>",
                ],
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
            },
            indent=1,
        )
    )
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": ids["<|im_end|>"]}))
    (root / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=1))
    (root / "processor_config.json").write_text(
        json.dumps(
            {
                "processor_class": "Eagle25VLProcessor",
                "auto_map": {"AutoProcessor": "processing_eagle2_5_vl.Eagle25VLProcessor"},
                "image_token": "<IMG_CONTEXT>",
                "video_token": "<IMG_CONTEXT>",
                "tokens_per_tile": TOKENS_PER_TILE,
                "image_placeholder": "image",
                "video_placeholder": "video",
                "image_start_token": "<img>",
                "image_end_token": "</img>",
            },
            indent=1,
        )
    )
    (root / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Eagle25VLImageProcessorFast",
                "processor_class": "Eagle25VLProcessor",
                "auto_map": {
                    "AutoImageProcessor": "image_processing_eagle2_5_vl_fast.Eagle25VLImageProcessorFast",
                    "AutoProcessor": "processing_eagle2_5_vl.Eagle25VLProcessor",
                },
                "size": {"height": 32, "width": 32},
                "crop_size": None,
                "do_resize": True,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_convert_rgb": True,
                "resample": 3,
                "do_pad": False,
                "max_dynamic_tiles": 1,
                "min_dynamic_tiles": 1,
                "use_thumbnail": False,
                "pad_during_tiling": False,
            },
            indent=1,
        )
    )
    write_eagle_config(
        root,
        ids["<IMG_CONTEXT>"],
        vision={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        text={
            "vocab_size": 320,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
    )
    return ids


def redraw_weights(model: torch.nn.Module) -> None:
    """Random weights at a scale where every part of the network moves the actions, as trained weights
    do: GR00T's N(0, 0.02) init at these tiny widths leaves the action path almost silent (the padded
    dims' feedback, for one, would change the chunk by 1e-5 only). Matrices N(0, 1/fan_in), norms
    1 + N(0, 0.1), biases and embeddings N(0, 0.1); then rounded to bf16, the dtype they are stored in."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2 and "embedding" not in name and "future_tokens" not in name:
                fan_in = p.shape[1] if p.ndim == 3 or name.endswith(".W") else p[0].numel()
                p.copy_(noise / fan_in**0.5)
            elif (
                p.ndim == 1 and ("norm" in name or name.endswith("mlp1.0.weight")) and name.endswith("weight")
            ):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
            p.copy_(p.bfloat16().float())


def groot_config() -> dict:
    """The GR00T N1.5 config at tiny sizes (the keys of the official config.json)."""
    return {
        "action_dim": 32,
        "action_horizon": 16,
        "compute_dtype": "float32",
        "backbone_cfg": {
            "select_layer": 2,
            "tune_llm": False,
            "tune_visual": True,
            "project_to_dim": None,
            "reproject_vision": False,
            "use_flash_attention": False,
            "load_bf16": False,
        },
        "action_head_cfg": {
            "action_dim": 32,
            "action_horizon": 16,
            "add_pos_embed": True,
            "backbone_embedding_dim": 32,
            "diffusion_model_cfg": {
                "attention_head_dim": 8,
                "cross_attention_dim": 32,
                "dropout": 0.2,
                "final_dropout": True,
                "interleave_self_attention": True,
                "norm_type": "ada_norm",
                "num_attention_heads": 2,
                "num_layers": 4,
                "output_dim": 16,
                "positional_embeddings": None,
            },
            "hidden_size": 16,
            "input_embedding_dim": 16,
            "max_action_dim": 32,
            "max_state_dim": 32,
            "max_num_embodiments": 32,
            "max_seq_len": 64,
            "noise_beta_alpha": 1.5,
            "noise_beta_beta": 1.0,
            "noise_s": 0.999,
            "num_inference_timesteps": 4,
            "num_target_vision_tokens": 8,
            "num_timestep_buckets": 1000,
            "tune_diffusion_model": True,
            "tune_projector": True,
            "use_vlln": True,
            "vl_self_attention_cfg": {
                "attention_head_dim": 16,
                "dropout": 0.2,
                "final_dropout": True,
                "num_attention_heads": 2,
                "num_layers": 1,
                "positional_embeddings": None,
            },
        },
    }


def modality_stats(rng: np.random.Generator) -> dict:
    """metadata.json statistics per modality: left_arm 7, right_arm 7, claw 2 (state and action)."""
    out: dict = {}
    for kind in ("state", "action"):
        out[kind] = {}
        for key, dim in (("left_arm", 7), ("right_arm", 7), ("claw", 2)):
            lo = rng.uniform(-2.0, -0.5, dim)
            hi = rng.uniform(0.5, 2.0, dim)
            if key == "claw" and kind == "state":
                hi[1] = lo[1]  # a constant dim: the reference maps it to 0 and back to min
            mean = (lo + hi) / 2 + rng.uniform(-0.1, 0.1, dim)
            out[kind][key] = {
                "max": hi.tolist(),
                "min": lo.tolist(),
                "mean": mean.tolist(),
                "std": rng.uniform(0.2, 0.8, dim).tolist(),
                "q01": (lo + 0.05).tolist(),
                "q99": (hi - 0.05).tolist(),
            }
    return out


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="fixture directory (replaced)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="groot_ref_"))
    os.environ["HF_LEROBOT_HOME"] = str(home)  # read when lerobot is imported: the Eagle cache lives here
    os.environ["HF_HUB_OFFLINE"] = "1"
    skip_unloadable_torchvision_fakes()
    import lerobot
    from lerobot.policies.groot.groot_n1 import DEFAULT_TOKENIZER_ASSETS_REPO, GR00TN15, GR00TN15Config
    from lerobot.policies.groot.processor_groot import (
        GrootActionUnpackUnnormalizeStep,
        GrootEagleCollateStep,
        GrootEagleEncodeStep,
        GrootPackInputsStep,
        collate,
    )
    from lerobot.processor.core import TransitionKey
    from safetensors.torch import save_file

    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    ckpt = out / "checkpoint"
    processor_dir = ckpt / "eagle2_hg_model"
    ids = write_processor_files(processor_dir)
    # lerobot reads the Eagle config and processor from its cache folder: give it these files
    shutil.copytree(processor_dir, home / DEFAULT_TOKENIZER_ASSETS_REPO, dirs_exist_ok=True)

    torch.manual_seed(0)
    with sdpa_instead_of_flash_attention():
        model = GR00TN15(GR00TN15Config(**groot_config()), local_model_path=str(ckpt))
    model.eval()
    redraw_weights(model)
    # stored as bf16 without casting the model: a round trip through bf16 would also round its fp32
    # buffers (the LLM's RoPE frequencies) and change the reference's outputs
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.save_pretrained(str(ckpt), state_dict=bf16, max_shard_size="200KB", safe_serialization=True)
    logger.info("checkpoint: %s", sorted(p.name for p in ckpt.iterdir()))

    rng = np.random.default_rng(7)
    stats = modality_stats(rng)
    (ckpt / "experiment_cfg").mkdir()
    (ckpt / "experiment_cfg" / "metadata.json").write_text(
        json.dumps(
            {
                EMBODIMENT_TAG: {
                    "statistics": stats,
                    "modalities": {
                        "video": {
                            f"{c}_view": {"resolution": [40, 24], "channels": 3, "fps": 20.0} for c in CAMERAS
                        },
                        "state": {
                            k: {"absolute": True, "rotation_type": None, "shape": [d], "continuous": True}
                            for k, d in (("left_arm", 7), ("right_arm", 7), ("claw", 2))
                        },
                        "action": {
                            k: {"absolute": True, "rotation_type": None, "shape": [d], "continuous": True}
                            for k, d in (("left_arm", 7), ("right_arm", 7), ("claw", 2))
                        },
                    },
                    "embodiment_tag": EMBODIMENT_TAG,
                }
            },
            indent=1,
        )
    )
    (out / "modality.yaml").write_text(
        "# GR00T N1.5 modality keys of the fixture checkpoint -> the bimanual robot\n"
        f"embodiment_tag: {EMBODIMENT_TAG}\n"
        "video:\n" + "".join(f"  video.{c}_view: {c}\n" for c in CAMERAS) + "state:\n"
        "  state.left_arm: left_arm\n  state.right_arm: right_arm\n  state.claw: claw\n"
        "action:\n  action.left_arm: left_arm\n  action.right_arm: right_arm\n  action.claw: claw\n"
    )

    def cat(kind: str, stat: str) -> torch.Tensor:
        return torch.tensor(
            np.concatenate([stats[kind][k][stat] for k in ("left_arm", "right_arm", "claw")]),
            dtype=torch.float32,
        )

    dataset_stats = {
        "observation.state": {"min": cat("state", "min"), "max": cat("state", "max")},
        "action": {"min": cat("action", "min"), "max": cat("action", "max")},
    }
    images = {c: rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8) for c in CAMERAS}
    lo, hi = (
        dataset_stats["observation.state"]["min"].numpy(),
        dataset_stats["observation.state"]["max"].numpy(),
    )
    state = (lo + rng.uniform(0.1, 0.9, STATE_DIM) * (hi - lo)).astype(np.float32)
    lo, hi = dataset_stats["action"]["min"].numpy(), dataset_stats["action"]["max"].numpy()
    train_actions = (lo + rng.uniform(0.0, 1.0, (16, STATE_DIM)) * (hi - lo)).astype(np.float32)

    steps = [
        GrootPackInputsStep(
            state_horizon=1,
            action_horizon=16,
            max_state_dim=32,
            max_action_dim=32,
            embodiment_tag=EMBODIMENT_TAG,
            normalize_min_max=True,
            stats=dataset_stats,
        ),
        GrootEagleEncodeStep(),
        GrootEagleCollateStep(),
    ]

    def transition_of(cams: dict, raw_state: np.ndarray, task: str, with_action: bool) -> dict:
        obs = {f"observation.images.{c}": torch.from_numpy(cams[c]).permute(2, 0, 1)[None] for c in CAMERAS}
        obs["observation.state"] = torch.from_numpy(raw_state)[None]
        return {
            TransitionKey.OBSERVATION: obs,
            TransitionKey.ACTION: torch.from_numpy(train_actions)[None] if with_action else None,
            TransitionKey.COMPLEMENTARY_DATA: {"task": task},
        }

    def preprocess(with_action: bool) -> dict:
        transition = transition_of(images, state, INSTRUCTION, with_action)
        for step in steps:
            transition = step(transition)
        comp = transition[TransitionKey.COMPLEMENTARY_DATA]
        batch = {
            k: v for k, v in comp.items() if k.startswith("eagle_") or k in ("embodiment_id", "action_mask")
        }
        batch["state"] = transition[TransitionKey.OBSERVATION]["state"]
        batch["state_mask"] = transition[TransitionKey.OBSERVATION]["state_mask"]
        if with_action:
            batch["action"] = transition[TransitionKey.ACTION]
        return batch

    inputs = preprocess(with_action=False)
    logger.info("image processor: %s", type(steps[1].proc.image_processor).__name__)
    logger.info(
        "prompt: %d tokens, pixel_values %s",
        inputs["eagle_input_ids"].shape[1],
        tuple(inputs["eagle_pixel_values"].shape),
    )
    head = model.action_head
    with torch.no_grad():
        torch.manual_seed(11)
        noise = torch.randn(1, 16, 32)
        torch.manual_seed(11)
        chunk = model.get_action(inputs)["action_pred"]  # [1, 16, 32] normalised
        head.num_inference_timesteps = 1  # one Euler step of size 1: x_1 = noise + v(noise, t=0)
        torch.manual_seed(11)
        velocity = model.get_action(inputs)["action_pred"] - noise
        head.num_inference_timesteps = 4

        train = preprocess(with_action=True)
        torch.manual_seed(13)
        loss_noise = torch.randn(1, 16, 32)
        loss_t = head.sample_time(1, device="cpu", dtype=torch.float32)
        torch.manual_seed(13)
        loss = model.forward(train)["loss"]

    # a batch of two prompts of different lengths: lerobot's collate pads the shorter on the left, and
    # the reference attends to that padding (no VL attention mask)
    images2 = {c: rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8) for c in CAMERAS}
    lo, hi = (
        dataset_stats["observation.state"]["min"].numpy(),
        dataset_stats["observation.state"]["max"].numpy(),
    )
    state2 = (lo + rng.uniform(0.1, 0.9, STATE_DIM) * (hi - lo)).astype(np.float32)
    contents, states = [], []
    for cams, raw, task in ((images, state, INSTRUCTION), (images2, state2, SHORT_INSTRUCTION)):
        transition = steps[1](steps[0](transition_of(cams, raw, task, with_action=False)))
        contents.append({"eagle_content": transition[TransitionKey.COMPLEMENTARY_DATA]["eagle_content"][0]})
        states.append(transition[TransitionKey.OBSERVATION]["state"])
    pair = {
        f"eagle_{k}" if not k.startswith("eagle_") else k: v
        for k, v in collate(contents, steps[2].proc).items()
    }
    pair["state"] = torch.cat(states)
    pair["embodiment_id"] = torch.full((2,), 31, dtype=torch.long)
    with torch.no_grad():
        torch.manual_seed(17)
        pair_noise = torch.randn(2, 16, 32)
        torch.manual_seed(17)
        pair_chunk = model.get_action(pair)["action_pred"]
    logger.info(
        "pair: input_ids %s, padding %d",
        tuple(pair["eagle_input_ids"].shape),
        int((pair["eagle_attention_mask"] == 0).sum()),
    )

    unpack = GrootActionUnpackUnnormalizeStep(
        env_action_dim=STATE_DIM, stats=dataset_stats, normalize_min_max=True
    )
    chunk_raw = unpack({TransitionKey.ACTION: chunk[0].clone()})[TransitionKey.ACTION]  # [16, 16] per step

    tensors = {
        **{f"image.{c}": torch.from_numpy(images[c]) for c in CAMERAS},
        "state": torch.from_numpy(state),
        "noise": noise[0],
        "input_ids": inputs["eagle_input_ids"][0],
        "pixel_values": inputs["eagle_pixel_values"].float(),
        "velocity": velocity[0].float(),
        "chunk_normalized": chunk[0].float(),
        "chunk": chunk_raw.float(),
        "train_actions": torch.from_numpy(train_actions),
        "loss_noise": loss_noise[0],
        "loss_t": loss_t.float(),
        "loss": loss.float().reshape(1),
        **{f"pair.image.{c}": torch.from_numpy(images2[c]) for c in CAMERAS},
        "pair.state": torch.from_numpy(state2),
        "pair.noise": pair_noise,
        "pair.input_ids": pair["eagle_input_ids"],
        "pair.attention_mask": pair["eagle_attention_mask"].to(torch.int64),
        "pair.chunk_normalized": pair_chunk.float(),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(
        json.dumps(
            {
                "instruction": INSTRUCTION,
                "pair_instruction": SHORT_INSTRUCTION,
                "cameras": list(CAMERAS),
                "embodiment_tag": EMBODIMENT_TAG,
                "image_token_id": ids["<IMG_CONTEXT>"],
                "reference": f"lerobot {lerobot.__version__} (lerobot.policies.groot), "
                f"torch {torch.__version__}, transformers {__import__('transformers').__version__}",
                "generated_by": "scripts/make_groot_reference_fixture.py",
            },
            indent=1,
        )
    )
    # the full-size official key names and shapes, from the reference built on the meta device
    write_eagle_config(home / DEFAULT_TOKENIZER_ASSETS_REPO, 151669, FULL_VISION, FULL_TEXT)
    torch.distributions.Distribution.set_default_validate_args(False)  # its Beta(1.5, 1) is on meta too
    with torch.device("meta"), sdpa_instead_of_flash_attention():
        full = GR00TN15(GR00TN15Config(**full_groot_config()), local_model_path=str(home))
    keys = {k: list(v.shape) for k, v in full.state_dict().items()}
    (out / "official_keys_full_size.json").write_text(
        json.dumps({"config": full_groot_config(), "keys": keys}, separators=(",", ":"))
    )
    logger.info(
        "full size: %d keys, %.3f B parameters", len(keys), sum(p.numel() for p in full.parameters()) / 1e9
    )
    shutil.rmtree(home, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    logger.info("wrote %s (%d bytes); loss %.6f", out, size, float(loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
