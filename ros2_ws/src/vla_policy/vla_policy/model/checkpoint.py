"""Checkpoint directories: ``config.json``, ``model.safetensors`` (or sharded with
``model.safetensors.index.json``), ``statistics.json``, optional ``tokenizer.json``.

Nothing is unpickled: ``.bin``/``.pt`` weights are refused. Key checks are strict and name the missing and
unexpected keys. ``config.json``::

    {"format": "vla_policy", "format_version": 1, "random_init": true|false, "model": {ModelConfig}}
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vla_policy.model.config import ModelConfig
from vla_policy.model.normalization import Normalizer
from vla_policy.strict_config import ConfigError, from_dict, to_dict

logger = logging.getLogger(__name__)

FORMAT = "vla_policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
STATS_FILE = "statistics.json"
TOKENIZER_FILE = "tokenizer.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class CheckpointError(RuntimeError):
    """The checkpoint directory is missing, corrupt, unsafe or does not match the model."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    normalizer: Normalizer
    random_init: bool
    digest: str  # sha256 of the weight file(s)
    path: Path


def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(
        f"{path}: pickle weight files ({', '.join(PICKLE_SUFFIXES)}) are never loaded; "
        f"convert them to {WEIGHTS_FILE}"
    )


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint dir, in shard order."""
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        raise CheckpointError(f"{path}: expected a checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    if (path / INDEX_FILE).is_file():
        try:
            index = json.loads((path / INDEX_FILE).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"{path / INDEX_FILE}: corrupt shard index ({exc})") from exc
        for s in shards:
            if Path(s).suffix in PICKLE_SUFFIXES:
                _refuse_pickle(path / s)
            if not (path / s).is_file():
                raise CheckpointError(f"{path / s}: shard listed in {INDEX_FILE} is missing")
        return [path / s for s in shards]
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(path / pickles[0])
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE} or {INDEX_FILE}")


def file_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def read_config(path: Path) -> tuple[ModelConfig, bool]:
    """(ModelConfig, random_init) from ``config.json``."""
    try:
        data = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no {CONFIG_FILE}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: corrupt ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or "model" not in data:
        raise CheckpointError(f"{path / CONFIG_FILE}: expected format '{FORMAT}' with a 'model' section")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_FILE}: format_version {data['format_version']} is newer than "
            f"supported {FORMAT_VERSION}"
        )
    try:
        config = from_dict(ModelConfig, data["model"], "config.json:model")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    return config, bool(data.get("random_init", False))


def read_state_dict(
    files: list[Path], dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors files; floating tensors cast to ``dtype`` when given."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device=str(device)) as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    if key in out:
                        raise CheckpointError(f"{f}: tensor {key!r} appears in more than one shard")
                    t = fh.get_tensor(key)
                    out[key] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{f}: corrupt or truncated safetensors file ({exc})") from exc
    return out


def load_checkpoint(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Read a checkpoint directory (no model is built here)."""
    path = Path(path)
    files = weight_files(path)
    config, random_init = read_config(path)
    state_dict = read_state_dict(files, dtype, device)
    stats_path = path / STATS_FILE
    if stats_path.is_file():
        try:
            normalizer = Normalizer.from_json(stats_path, config.normalization)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc
    else:
        logger.warning("%s: no %s, using identity normalisation", path, STATS_FILE)
        normalizer = Normalizer.identity(
            config.action_head.max_state_dim, config.action_head.action_dim, config.normalization
        )
    return LoadedCheckpoint(config, state_dict, normalizer, random_init, file_digest(files), path)


def check_keys(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Raise CheckpointError naming missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_names(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def _names(items: list[str], limit: int = 8) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def save_checkpoint(
    path: str | Path,
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    normalizer: Normalizer | None = None,
    random_init: bool = False,
    max_shard_bytes: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory; shards when ``max_shard_bytes`` is given and exceeded."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "random_init": random_init,
        "model": to_dict(config),
        **(extra or {}),
    }
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=1))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for k in sorted(tensors):
            n = tensors[k].numel() * tensors[k].element_size()
            if shards[-1] and size + n > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][k] = tensors[k]
            size += n
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        (path / INDEX_FILE).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
        )
    norm = normalizer or Normalizer.identity(config.action_head.max_state_dim, config.action_head.action_dim)
    norm.to_json(path / STATS_FILE)
    return path
