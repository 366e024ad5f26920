"""Full-size GR00T N1.5 import benchmark: load time and peak RSS of an official-layout checkpoint.

Writes a checkpoint in the official layout at GR00T N1.5-3B's real shapes with random bf16 weights
(``config.json``, 2 GB ``model-*.safetensors`` shards + index, ``experiment_cfg/metadata.json``, the Eagle
processor folder; the key names and shapes are the reference's, from
``tests/fixtures/groot_n15_tiny/official_keys_full_size.json``), then loads it with
``groot_import.load_groot`` in a fresh process per dtype and reports the wall time and the peak RSS of
that process, after the load and after every weight has been read once (bf16 weights stay mapped from
the file until used). Needs about 5 GB of disk and, for fp32, about 11 GB of memory. Run in the
repository venv::

    source scripts/env.sh
    python scripts/bench_groot_import.py --work /tmp/groot_full [--dtypes bfloat16,float32] [--convert]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "ros2_ws" / "src" / "vla_policy" / "tests" / "fixtures" / "groot_n15_tiny"
SHARD_BYTES = 2 << 30  # 2 GB shards keep the writer's memory low
logger = logging.getLogger("bench_groot_import")


def write_checkpoint(dst: Path) -> int:
    """The official layout at full size, random bf16 weights; returns the parameter count."""
    official = json.loads((FIXTURE / "official_keys_full_size.json").read_text())
    keys: dict[str, list[int]] = official["keys"]
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    config = {**official["config"], "model_type": "gr00t_n1_5", "architectures": ["GR00T_N1_5"]}
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    shutil.copytree(FIXTURE / "checkpoint" / "experiment_cfg", dst / "experiment_cfg")
    proc = dst / "eagle2_hg_model"
    shutil.copytree(FIXTURE / "checkpoint" / "eagle2_hg_model", proc)
    eagle = json.loads((proc / "config.json").read_text())
    eagle["force_image_size"] = 224
    eagle["vision_config"].update(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
    )
    eagle["text_config"].update(
        vocab_size=151680,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
    )
    (proc / "config.json").write_text(json.dumps(eagle, indent=1))
    for name, change in (
        ("processor_config.json", {"tokens_per_tile": 64}),
        ("preprocessor_config.json", {"size": {"height": 224, "width": 224}}),
    ):
        data = json.loads((proc / name).read_text())
        data.update(change)
        (proc / name).write_text(json.dumps(data, indent=1))
    # tied embeddings: the reference's save_pretrained stores the embedding once, not lm_head
    names = [k for k in sorted(keys) if not k.endswith("lm_head.weight")]
    gen = torch.Generator().manual_seed(0)
    shards: list[list[str]] = [[]]
    size = 0
    for k in names:
        n = 2 * int(torch.Size(keys[k]).numel())
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(k)
        size += n
    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {k: (torch.randn(keys[k], generator=gen) * 0.02).to(torch.bfloat16) for k in shard}
        total += sum(t.numel() for t in tensors.values())
        save_file(tensors, str(dst / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
        del tensors
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return total


def child(src: Path, dtype: str, convert: Path | None) -> None:
    """Load (or, with ``convert``, run ``vla-policy import`` into it) in this process and print wall
    seconds and peak RSS (JSON)."""
    from vla_policy.model.groot_import import ModalityMap, import_groot, load_groot

    if convert is not None:
        t0 = time.perf_counter()
        import_groot(
            src, convert, ModalityMap.from_yaml(FIXTURE / "modality.yaml"), dtype=getattr(torch, dtype)
        )
        seconds = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        written = sum(f.stat().st_size for f in convert.glob("*.safetensors")) / 1e9
        sys.stdout.write(
            json.dumps(
                {
                    "dtype": dtype,
                    "convert_seconds": round(seconds, 2),
                    "convert_peak_rss_gb": round(peak_kb / 1e6, 2),
                    "written_gb": round(written, 2),
                }
            )
            + "\n"
        )
        return
    t0 = time.perf_counter()
    policy = load_groot(src, ModalityMap.from_yaml(FIXTURE / "modality.yaml"), dtype=getattr(torch, dtype))
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in policy.model.parameters())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # weights read straight from the file mapping become resident when used: touch every one
    with torch.no_grad():
        for p in policy.model.parameters():
            p.sum()
    touched_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    weights_gb = sum(p.numel() * p.element_size() for p in policy.model.parameters()) / 1e9
    sys.stdout.write(
        json.dumps(
            {
                "dtype": dtype,
                "seconds": round(seconds, 2),
                "peak_rss_gb": round(peak_kb / 1e6, 2),
                "peak_rss_after_touch_gb": round(touched_kb / 1e6, 2),
                "weights_gb": round(weights_gb, 2),
                "parameters": params,
            }
        )
        + "\n"
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="where the full-size checkpoint is written")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--convert", action="store_true", help="also time `vla-policy import` (bf16 output)")
    parser.add_argument("--child", choices=("bfloat16", "float32"), help=argparse.SUPPRESS)
    parser.add_argument("--child-convert", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    src = args.work / "gr00t_n15_random"
    if args.child:
        child(src, args.child, args.child_convert)
        return 0
    t0 = time.perf_counter()
    params = write_checkpoint(src)
    logger.info("wrote %s: %.3f B parameters in %.0f s", src, params / 1e9, time.perf_counter() - t0)
    results = []
    runs = [[dtype] for dtype in args.dtypes.split(",")]
    if args.convert:
        runs.append(["bfloat16", "--child-convert", str(args.work / "converted")])
    for dtype, *extra in runs:
        out = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--child", dtype, *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            logger.error("%s load failed: %s", dtype, out.stderr.strip().splitlines()[-1:])
            return 1
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        logger.info("%s", results[-1])
    if not args.keep:
        shutil.rmtree(src)
        shutil.rmtree(args.work / "converted", ignore_errors=True)
    if args.json:
        sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
