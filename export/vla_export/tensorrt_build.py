"""Build TensorRT 10 engines from the exported ONNX graphs.

Optimisation profiles come from the camera-count and text-length ranges. A timing cache is kept beside
the engines, and each engine is keyed by (ONNX hash, TensorRT version, GPU name, precision): an engine
built for another key is rebuilt, not loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vla_policy.backends.artifact_manifest import ArtifactManifest, GraphSpec, load_manifest
from vla_policy.backends.tensorrt_runner import EngineKey, engine_matches, import_tensorrt
from vla_policy.strict_config import require

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class ProfileRanges:
    """Ranges of the dynamic axes that the engines must accept: (min, opt, max) each."""

    batch: tuple[int, int, int] = (1, 1, 1)
    cameras: tuple[int, int, int] = (1, 2, 4)
    text_len: tuple[int, int, int] = (8, 64, 256)

    def __post_init__(self) -> None:
        for name in ("batch", "cameras", "text_len"):
            lo, opt, hi = getattr(self, name)
            require(
                1 <= lo <= opt <= hi, f"{name} range must satisfy 1 <= min <= opt <= max, got {(lo, opt, hi)}"
            )


def _axis_value(axis: int | str, ranges: ProfileRanges, which: int, tokens: dict[str, int]) -> int:
    """Concrete size of one (possibly symbolic) axis for profile point ``which`` (0 min, 1 opt, 2 max).

    Axis names are those of the ONNX export: ``batch``, ``images`` (batch x cameras x history frames)
    and ``seq_len`` (BOS + image tokens + text tokens).
    """
    if isinstance(axis, int):
        return axis
    batch, cameras = ranges.batch[which], ranges.cameras[which]
    if axis == "batch":
        return batch
    if axis == "images":
        return batch * cameras * tokens["history_frames"]
    if axis == "seq_len":
        return 1 + cameras * tokens["image_tokens_per_camera"] + ranges.text_len[which]
    raise ValueError(f"no profile rule for dynamic axis '{axis}'")


def build_engine(
    onnx_dir: Path,
    graph: GraphSpec,
    out_dir: Path,
    precision: str,
    ranges: ProfileRanges,
    tokens: dict[str, int],
) -> Path:
    """Build (or reuse, when its key matches) the engine for one graph; returns the engine path."""
    trt = import_tensorrt()
    key = EngineKey.current(graph.sha256, precision)
    engine_path = out_dir / f"{graph.name}.{key.digest()}.engine"
    if engine_matches(engine_path, key):
        log.info("engine %s is current for %s; reusing it", engine_path.name, key)
        return engine_path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_dir / graph.file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{graph.file}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    cache_path = out_dir / TIMING_CACHE
    timing_cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for spec in graph.inputs:
        points = [tuple(_axis_value(a, ranges, i, tokens) for a in spec.shape) for i in range(3)]
        profile.set_shape(spec.name, *points)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{graph.file}: TensorRT engine build failed (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    engine_path.with_suffix(".key.json").write_text(json.dumps(key.__dict__, indent=2))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s (%s)", engine_path.name, precision)
    return engine_path


def build_all(
    onnx_dir: Path, out_dir: Path, precision: str, ranges: ProfileRanges
) -> tuple[ArtifactManifest, dict[str, Path]]:
    """Engines for every graph of an export directory; writes ``engines.json`` mapping graph → engine."""
    manifest = load_manifest(onnx_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = {k: int(manifest.extra.get(k, 1)) for k in ("image_tokens_per_camera", "history_frames")}
    engines = {g.name: build_engine(onnx_dir, g, out_dir, precision, ranges, tokens) for g in manifest.graphs}
    (out_dir / "engines.json").write_text(json.dumps({k: v.name for k, v in engines.items()}, indent=2))
    return manifest, engines
