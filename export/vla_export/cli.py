"""``vla-export``: onnx, tensorrt, parity, bench. Bad input exits non-zero with one line, no traceback."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from vla_policy.backends.artifact_manifest import ArtifactError, load_manifest
from vla_policy.backends.graph_runner import BackendUnavailable
from vla_policy.model.checkpoint import CheckpointError
from vla_policy.strict_config import ConfigError

BENCHMARKS_MD = Path("docs/benchmarks.md")


class CLIError(Exception):
    """Bad user input: one line, exit code 2."""


def _range(text: str, name: str) -> tuple[int, int, int]:
    """'1..4' -> (1, opt, 4) with opt the midpoint (rounded down); '2' -> (2, 2, 2)."""
    try:
        lo, _, hi = text.partition("..")
        low, high = int(lo), int(hi or lo)
    except ValueError as exc:
        raise CLIError(f"--{name} must be N or MIN..MAX, got {text!r}") from exc
    if not 1 <= low <= high:
        raise CLIError(f"--{name} must satisfy 1 <= MIN <= MAX, got {text!r}")
    return low, (low + high) // 2, high


def cmd_onnx(args: argparse.Namespace) -> int:
    from vla_export.onnx_export import export_prefix

    manifest = export_prefix(
        args.checkpoint,
        args.out,
        args.opset,
        args.dtype,
        cameras=args.cameras,
        max_text_len=args.max_text_len,
    )
    graphs = ", ".join(g.name for g in manifest.graphs)
    print(f"exported {graphs} (opset {manifest.opset}, {manifest.dtype}) to {args.out}")
    return 0


def cmd_tensorrt(args: argparse.Namespace) -> int:
    from vla_export.tensorrt_build import ProfileRanges, build_all

    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    text_len = (
        args.text_len or f"1..{load_manifest(args.onnx, verify_hashes=False).extra.get('max_text_len', 64)}"
    )
    ranges = ProfileRanges(cameras=_range(args.cameras, "cameras"), text_len=_range(text_len, "text-len"))
    _, engines = build_all(args.onnx, args.out, precision, ranges)
    print(f"engines ({precision}) in {args.out}: {', '.join(p.name for p in engines.values())}")
    return 0


def cmd_parity(args: argparse.Namespace) -> int:
    from vla_export.parity import run_parity

    report = run_parity(args.checkpoint, args.artifacts, args.backend, args.engines, seed=args.seed)
    if args.json:
        print(json.dumps({"passed": report.passed, **asdict(report)}, indent=1))
    else:
        print(f"parity of {report.backend} against torch ({report.precision}):")
        for c in report.comparisons:
            mark = "ok  " if c.passed else "FAIL"
            print(
                f"  {mark} {c.name:<28} cosine {c.cosine:.9f}  max abs {c.max_abs:.3e}  rel {c.rel_error:.3e}"
            )
    if not report.passed:
        print(
            f"vla-export parity: error: threshold breached by {', '.join(report.failures)}", file=sys.stderr
        )
        return 1
    return 0


def cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from vla_export.bench import markdown_table, run_bench

    if args.reps < 1:
        raise CLIError(f"--reps must be >= 1, got {args.reps}")
    data = run_bench(
        args.checkpoint, args.artifacts, tuple(args.backend), args.engines, args.reps, device=args.device
    )
    command = "vla-export " + shlex.join(argv)
    if args.out_json:
        args.out_json.write_text(json.dumps(data, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        with args.markdown.open("a") as handle:
            handle.write("\n" + markdown_table(data, command))
    print(json.dumps(data, indent=1) if args.json else markdown_table(data, command))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-export", description="Export the VLA prefix; check and time it"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("onnx", help="export the prefix graphs to ONNX with a manifest")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cameras", type=int, default=None, help="cameras to trace with (axis stays dynamic)")
    p.add_argument(
        "--max-text-len",
        type=int,
        default=None,
        help="longest instruction in tokens (sets the TensorRT profile)",
    )
    p.add_argument("--opset", type=int, default=19)
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")

    p = sub.add_parser("tensorrt", help="build TensorRT 10 engines from an ONNX export")
    p.add_argument("--onnx", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true")
    precision.add_argument("--bf16", action="store_true")
    p.add_argument("--cameras", default="1..4", help="camera-count range MIN..MAX")
    p.add_argument("--text-len", default=None, help="text-token range MIN..MAX (default 1..the export's max)")

    p = sub.add_parser("parity", help="compare an exported backend with torch, graph by graph")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--artifacts", type=Path, required=True, help="ONNX export directory")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    p.add_argument("--engines", type=Path, default=None, help="TensorRT engine directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="prefix latency of each backend against eager torch, in one run")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--artifacts", type=Path, default=None)
    p.add_argument("--engines", type=Path, default=None)
    p.add_argument(
        "--backend", action="append", choices=("onnxruntime", "tensorrt", "torch_compile"), default=None
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out-json", type=Path, default=None)
    p.add_argument(
        "--markdown", type=Path, default=None, help=f"append the table here (e.g. {BENCHMARKS_MD})"
    )
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command == "bench" and args.backend is None:
        args.backend = ["onnxruntime"]
    try:
        if args.command == "bench":
            return cmd_bench(args, argv)
        return {"onnx": cmd_onnx, "tensorrt": cmd_tensorrt, "parity": cmd_parity}[args.command](args)
    except (
        CLIError,
        ConfigError,
        CheckpointError,
        ArtifactError,
        BackendUnavailable,
        ValueError,
        OSError,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vla-export {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
