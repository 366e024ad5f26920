"""``manifest.json`` of an exported artifact directory: graphs, their I/O, opset and source checkpoint.

Written by the export pipeline, read and checked by the runtime backends before any graph is loaded,
so that a corrupt or mismatched directory is refused with a clear message rather than a crash later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from vla_policy.strict_config import ConfigError, from_dict, require, to_dict

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """An artifact directory is missing, corrupt, or does not match the checkpoint."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` entries are ints or symbolic axis names."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class GraphSpec:
    name: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: bool = False

    def __post_init__(self) -> None:
        # from_dict leaves nested lists of dicts as tuples of dicts; normalise them here.
        object.__setattr__(self, "inputs", tuple(_spec(s) for s in self.inputs))
        object.__setattr__(self, "outputs", tuple(_spec(s) for s in self.outputs))


def _spec(value: TensorSpec | dict) -> TensorSpec:
    return value if isinstance(value, TensorSpec) else from_dict(TensorSpec, value)


@dataclass(frozen=True)
class ArtifactManifest:
    checkpoint_sha256: str
    model_name: str
    expert: str
    opset: int
    dtype: str
    graphs: tuple[GraphSpec, ...]
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "graphs",
            tuple(g if isinstance(g, GraphSpec) else from_dict(GraphSpec, g) for g in self.graphs),
        )
        require(
            self.format_version == FORMAT_VERSION, f"manifest format {self.format_version} is not supported"
        )
        require(
            self.dtype in ("fp32", "fp16", "bf16"), f"dtype must be fp32, fp16 or bf16, got {self.dtype!r}"
        )

    def graph(self, name: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise ArtifactError(f"manifest has no graph '{name}' (has: {', '.join(g.name for g in self.graphs)})")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: ArtifactManifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(to_dict(manifest), indent=2) + "\n")
    return path


def load_manifest(
    directory: Path, checkpoint_sha256: str | None = None, verify_hashes: bool = True
) -> ArtifactManifest:
    """Read and check ``directory/manifest.json``; optionally that it was exported from this checkpoint."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME}; export it with 'vla-export onnx'")
    try:
        manifest = from_dict(ArtifactManifest, json.loads(path.read_text()), "manifest.json")
    except (json.JSONDecodeError, ConfigError) as exc:
        raise ArtifactError(f"{path}: corrupt manifest ({exc})") from exc
    if checkpoint_sha256 is not None and manifest.checkpoint_sha256 != checkpoint_sha256:
        raise ArtifactError(
            f"{directory}: exported from checkpoint {manifest.checkpoint_sha256[:12]}, "
            f"but the loaded checkpoint is {checkpoint_sha256[:12]}; re-export it"
        )
    for graph in manifest.graphs:
        graph_path = directory / graph.file
        if not graph_path.is_file():
            raise ArtifactError(f"{graph_path}: graph '{graph.name}' is missing")
        if verify_hashes and file_sha256(graph_path) != graph.sha256:
            raise ArtifactError(f"{graph_path}: hash does not match the manifest (corrupt or replaced)")
    return manifest
