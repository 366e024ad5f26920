"""``vla-policy``: describe, init, predict, bench (more subcommands register through SUBCOMMAND_PARSERS).

Each subcommand is added by an ``add_<name>_parser(subparsers)`` function that sets ``func`` on its parser;
``func(args) -> int`` is the exit code. A subcommand whose flags are the fields of its config dataclass
(``eval``, ``train``) registers with ``config_cli.add_subcommand`` and parses its own arguments. To add
one from another module, append its adder to :data:`SUBCOMMAND_PARSERS` or list it in
:data:`PLUGIN_SUBCOMMANDS` as ``"module:function"``.
Bad input exits non-zero with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vla_policy.config_cli import parse_known
from vla_policy.model.checkpoint import CheckpointError
from vla_policy.model.presets import PRESETS, get_preset
from vla_policy.observation import synthetic_observation
from vla_policy.strict_config import ConfigError, to_dict

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CLIError(Exception):
    """Bad user input: reported as one line, exit code 2."""


# ---- shared helpers -------------------------------------------------------------------------------
def _load_policy(args: argparse.Namespace) -> Any:
    from vla_policy.model.policy import VLAPolicy

    dtype = DTYPES[args.dtype]
    if getattr(args, "checkpoint", None):
        return VLAPolicy.from_checkpoint(args.checkpoint, device=args.device, dtype=dtype)
    return VLAPolicy(get_preset(args.preset), device=args.device, dtype=dtype, seed=args.seed)


def _add_model_source(p: argparse.ArgumentParser, preset_default: str | None = None) -> None:
    src = p.add_mutually_exclusive_group(required=preset_default is None)
    src.add_argument("--checkpoint", type=Path, help="checkpoint directory")
    src.add_argument("--preset", default=preset_default, help=f"preset name ({', '.join(PRESETS)})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--seed", type=int, default=0, help="init seed (presets) and noise seed")


def _emit(args: argparse.Namespace, data: dict[str, Any], text: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(data, indent=1) if getattr(args, "json", False) else text(data))


def _ms(x: float) -> float:
    return round(x * 1000.0, 3)


# ---- describe -------------------------------------------------------------------------------------
def module_parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts per top-level module: the Eagle parts and each action-head child."""
    counts: dict[str, int] = {}
    eagle = model.backbone.eagle_model
    for name, child in eagle.named_children():
        counts[f"backbone.eagle_model.{name}"] = sum(p.numel() for p in child.parameters())
    counts["backbone.eagle_linear"] = sum(p.numel() for p in model.backbone.eagle_linear.parameters())
    if isinstance(getattr(model.backbone, "cogvla", None), torch.nn.Module):  # CogVLA FiLM/router/DINOv2
        counts["backbone.cogvla"] = sum(p.numel() for p in model.backbone.cogvla.parameters())
    for name, child in model.action_head.named_children():
        counts[f"action_head.{name}"] = sum(p.numel() for p in child.parameters())
    if isinstance(getattr(model.action_head, "future_tokens", None), torch.nn.Module):
        counts["action_head.future_tokens"] = model.action_head.future_tokens.weight.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def model_shapes(model: torch.nn.Module) -> dict[str, Any]:
    """Key dimensions read off the built weights (so they cannot drift from the code)."""
    head = model.action_head
    shapes: dict[str, Any] = {}
    if hasattr(head, "state_encoder"):
        w1, w2 = head.state_encoder.layer1.W, head.state_encoder.layer2.W
        shapes["state_encoder"] = [w1.shape[1], w1.shape[2], w2.shape[2]]
        enc = head.action_encoder
        shapes["action_encoder"] = {
            "W1": _shape(enc.W1.W)[1:],
            "W2": _shape(enc.W2.W)[1:],
            "W3": _shape(enc.W3.W)[1:],
        }
        dit = head.model
        blocks = dit.transformer_blocks
        cross = dit.cross_layers[0]
        shapes["dit"] = {
            "blocks": len(blocks),
            "width": blocks[0].attn1.to_q.out_features,
            "heads": blocks[0].attn1.heads,
            "head_dim": blocks[0].attn1.dim_head,
            "cross_attention_blocks": list(dit.cross_layers),
            "cross_kv": [blocks[cross].attn1.to_k.in_features, blocks[cross].attn1.to_k.out_features],
            "proj_out_2": [dit.proj_out_2.in_features, dit.proj_out_2.out_features],
        }
        shapes["vl_self_attention_blocks"] = len(head.vl_self_attention.transformer_blocks)
        dec: dict[str, Any] = {}
        if hasattr(head, "action_decoder"):  # the reference layout: one MLP over every padded dim
            d = head.action_decoder
            dec["action_decoder"] = [d.layer1.W.shape[1], d.layer1.W.shape[2], d.layer2.W.shape[2]]
        elif hasattr(head, "shared_arm_decoder"):
            d = head.shared_arm_decoder
            dec["shared_layer"] = _shape(d.shared_layer.W)[1:]
            dec["left_output_layer"] = _shape(d.left_output_layer.W)[1:]
            dec["right_output_layer"] = _shape(d.right_output_layer.W)[1:]
            dec["cross_attention_arms"] = d.use_cross_attention
        else:
            d = head.action_arm_decoder
            dec["action_arm_decoder"] = [d.layer1.W.shape[1], d.layer1.W.shape[2], d.layer2.W.shape[2]]
        if hasattr(head, "action_claw_decoder"):
            c = head.action_claw_decoder
            dec["action_claw_decoder"] = [c.layer1.W.shape[1], c.layer1.W.shape[2], c.layer2.W.shape[2]]
        shapes["decoders"] = dec
    lm = model.backbone.eagle_model.language_model.model
    shapes["llm_layers_built"] = len(lm.layers)
    linears = [m for m in model.backbone.eagle_model.mlp1.modules() if isinstance(m, torch.nn.Linear)]
    shapes["mlp1"] = [linears[0].in_features, linears[-1].out_features]  # Eagle's projector: first, last
    return shapes


def cmd_describe(args: argparse.Namespace) -> int:
    from vla_policy.model.cogvla.backbone import token_counts
    from vla_policy.model.policy import VLAModel

    config = get_preset(args.preset)
    with torch.device("meta"):  # shapes only, no memory
        model = VLAModel(config)
    counts = module_parameter_counts(model)
    data = {
        "preset": args.preset,
        "config": to_dict(config),
        "image_tokens": config.backbone.num_image_tokens,
        "tokens": token_counts(config.backbone),  # per prefix stage (CogVLA aggregation / pruning)
        "parameters": counts,
        "shapes": model_shapes(model),
    }

    def text(d: dict[str, Any]) -> str:
        lines = [
            f"preset {d['preset']}: {d['parameters']['total'] / 1e6:.2f} M parameters, "
            f"{d['image_tokens']} image tokens"
        ]
        t = d["tokens"]
        lines.append(
            f"  tokens: {t['images']} images x {t['vit_tokens_per_image']} ViT -> "
            f"{t['image_tokens_per_image']} per image; LLM in {t['llm_input_tokens']} "
            f"(with {t['text_tokens']} text), per layer {t['llm_tokens_per_layer']}"
        )
        lines += [f"  {k:<40} {v:>15,}" for k, v in d["parameters"].items() if k != "total"]
        lines += [f"  {k}: {v}" for k, v in d["shapes"].items()]
        return "\n".join(lines)

    _emit(args, data, text)
    return 0


def add_describe_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("describe", help="config and parameter counts (built on the meta device)")
    p.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)


# ---- init -----------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    from vla_policy.model.policy import VLAPolicy

    config = get_preset(args.preset)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise CLIError(f"{out} exists and is not empty (use --force to overwrite)")
    policy = VLAPolicy(config, seed=args.seed)
    policy.save(out, random_init=True)
    print(f"wrote random-init {args.preset} checkpoint (seed {args.seed}) to {out}")
    return 0


def add_init_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write a randomly initialised checkpoint for a preset")
    p.add_argument("--preset", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty directory")
    p.set_defaults(func=cmd_init)


# ---- predict --------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    policy = _load_policy(args)
    cfg = policy.config
    obs = synthetic_observation(
        cfg.backbone.cameras,
        cfg.backbone.vision.image_size,
        args.state_dim,
        cfg.backbone.history_frames,
        args.instruction,
        seed=args.seed,
    )
    policy.predict_chunk(obs, seed=args.seed)  # warm-up: first call pays allocator / kernel selection
    res = policy.predict_chunk(obs, seed=args.seed)
    data = {
        "policy": policy.name,
        "shape": list(res.actions.shape),
        "dt": res.dt,
        "groups": {k: {"min": float(v.min()), "max": float(v.max())} for k, v in res.groups.items()},
        "timings_ms": {k: _ms(v) for k, v in res.timings.items()},
    }
    if args.json:
        data["actions"] = res.actions.tolist()

    def text(d: dict[str, Any]) -> str:
        lines = [f"{d['policy']}: actions {d['shape']} dt={d['dt']}"]
        lines += [f"  {k:<10} [{g['min']:+.4f}, {g['max']:+.4f}]" for k, g in d["groups"].items()]
        lines += [f"  {k:<18} {v:9.3f} ms" for k, v in d["timings_ms"].items()]
        return "\n".join(lines)

    _emit(args, data, text)
    return 0


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="one chunk on a synthetic observation")
    _add_model_source(p)
    p.add_argument("--state-dim", type=int, default=16)
    p.add_argument("--instruction", default="pick up the red cube")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


# ---- bench ----------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise CLIError(f"--reps must be >= 1, got {args.reps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.expert_cache_bench:  # one run, every expert: K/V cache vs recomputing the prefix each step
        from vla_policy.benchmarks.expert_cache_bench import expert_cache_bench, format_expert_cache_bench

        data = expert_cache_bench(args.expert_cache_bench.split(","), args.reps, args.warmup, args.seed)
        _emit(args, data, format_expert_cache_bench)
        return 0
    policy = _load_policy(args)
    from vla_policy.benchmarks.policy_bench import run_bench

    data = run_bench(policy, args.reps, args.warmup, args.seed)

    def text(d: dict[str, Any]) -> str:
        lines = [f"{d['policy']} on {d['device']} ({d['dtype']}), {d['steps']} steps, reps {args.reps}:"]
        lines += [
            f"  {k:<18} median {v['median_ms']:9.3f} ms  p99 {v['p99_ms']:9.3f} ms"
            for k, v in d["stages"].items()
        ]
        kv = d["kv_cache"]
        lines.append(
            f"  K/V cache: cached {kv['cached']['median_ms']:.3f} ms, uncached "
            f"{kv['uncached']['median_ms']:.3f} ms, speed-up x{kv['speedup']}"
        )
        return "\n".join(lines)

    _emit(args, data, text)
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-stage latency and the K/V-cache speed-up")
    _add_model_source(p, preset_default="tiny")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--expert-cache-bench",
        nargs="?",
        const="tiny,pi0-tiny,alpamayo-tiny",
        default="",
        metavar="PRESETS",
        help="K/V-cache speed-up for each preset's expert in one run (default: tiny,pi0-tiny,alpamayo-tiny)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)


# ---- import ---------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    import time

    from vla_policy.model.groot_import import ModalityMap, import_groot

    if args.dtype not in ("float32", "bfloat16"):
        raise CLIError(f"--dtype must be float32 or bfloat16, got {args.dtype}")
    t0 = time.perf_counter()
    out = import_groot(
        args.src,
        args.out,
        ModalityMap.from_yaml(args.modality),
        processor=args.processor,
        dtype=DTYPES[args.dtype],
        max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
    )
    from vla_policy.model.checkpoint import read_config

    config, _ = read_config(out)
    data = {
        "out": str(out),
        "name": config.name,
        "decoder_layout": config.decoder.layout,
        "action_width": config.action_width,
        "action_layout": {k: list(v) for k, v in config.action_layout.items()},
        "embodiment_id": config.embodiment_id,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    _emit(
        args,
        data,
        lambda d: (
            f"imported {args.src} -> {d['out']} ({d['name']}, {d['decoder_layout']} decoder, "
            f"actions {d['action_width']} wide: {d['action_layout']}) in {d['seconds']} s"
        ),
    )
    return 0


def add_import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="convert a GR00T N1.5 checkpoint (official layout) into a checkpoint of this repository",
        description="Strict: every weight mapped, none left over; one line names the first mismatch. "
        "The modality YAML maps the checkpoint's modality keys onto this robot (see "
        "vla_policy/model/groot_import.py and docs).",
    )
    p.add_argument(
        "src", type=Path, help="GR00T N1.5 checkpoint directory (config.json, model-*.safetensors, ...)"
    )
    p.add_argument(
        "--modality", type=Path, required=True, help="modality map YAML (keys -> cameras and groups)"
    )
    p.add_argument("--out", type=Path, required=True, help="output checkpoint directory (new or empty)")
    p.add_argument("--processor", type=Path, help="Eagle processor folder (default: SRC/eagle2_hg_model)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--max-shard-gb", type=float, default=4.0, help="shard size of the written weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)


# ---- registration ---------------------------------------------------------------------------------
SUBCOMMAND_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_describe_parser,
    add_init_parser,
    add_predict_parser,
    add_bench_parser,
    add_import_parser,
]
# "module:function" adders from other modules (eval, train, ...), added when importable
PLUGIN_SUBCOMMANDS: list[str] = [
    "vla_policy.evaluation.offline_eval:add_eval_parser",
    "vla_policy.training.trainer:add_train_parser",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-policy", description="VLA policy core: model tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = list(SUBCOMMAND_PARSERS)
    for spec in PLUGIN_SUBCOMMANDS:
        module, _, func = spec.partition(":")
        try:
            adders.append(getattr(importlib.import_module(module), func))
        except (ImportError, AttributeError) as exc:
            logger.debug("subcommand %s unavailable: %s", spec, exc)
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parse_known(parser, argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if getattr(args, "config_main", None) is not None:  # a command whose flags are a config (eval, train)
        return int(args.config_main(rest))
    try:
        return int(args.func(args))
    except (CLIError, ConfigError, CheckpointError, ValueError, KeyError, OSError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vla-policy {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
