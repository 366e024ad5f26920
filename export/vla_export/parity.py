"""Parity of an exported backend against eager torch, graph by graph and end to end.

Every graph gets the torch reference's own inputs, so an error in one graph does not hide or inflate
the next. The end-to-end check runs the whole chunk with the same noise through both prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from vla_policy.backends.artifact_manifest import load_manifest
from vla_policy.backends.prefix_backend import PrefixBackend
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import PrefixOutput, synthetic_observation

from vla_export.parity_thresholds import Comparison, compare


@dataclass(frozen=True)
class ParityReport:
    backend: str
    precision: str
    comparisons: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def failures(self) -> list[str]:
        return [c.name for c in self.comparisons if not c.passed]


def _stage_outputs(
    backend: PrefixBackend, inputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each stage of ``backend`` fed with the reference's inputs to that stage."""
    mask = inputs["attention_mask"]
    vit = backend.vision(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    features = backend.language(inputs["input_ids"], mask, reference["vision/vit_embeds"])
    out = {"vision/vit_embeds": vit, "llm/backbone_features": features}
    out.update(_prefix_outputs(backend.vl_head(reference["llm/backbone_features"], mask)))
    return out


def _prefix_outputs(prefix: PrefixOutput) -> dict[str, torch.Tensor]:
    out = {"vl_head/vl_features": prefix.features}
    for i, (k, v) in enumerate(prefix.cross_kv or ()):
        out[f"vl_head/cross_kv_{i}/k"] = k
        out[f"vl_head/cross_kv_{i}/v"] = v
    for i, (k, v) in enumerate(prefix.layer_kv or ()):  # deep_fusion / kv_cache_expert
        out[f"vl_head/layer_kv_{i}/k"] = k
        out[f"vl_head/layer_kv_{i}/v"] = v
    return out


def run_parity(
    checkpoint: Path,
    artifacts: Path,
    backend: str = "onnxruntime",
    engines: Path | None = None,
    seed: int = 0,
    instruction: str = "pick up the red cube and hand it over",
) -> ParityReport:
    """Compare ``backend`` with torch on a synthetic observation; thresholds by the export precision."""
    precision = load_manifest(artifacts, verify_hashes=False).dtype
    policy = VLAPolicy.from_checkpoint(checkpoint)
    bb = policy.config.backbone
    obs = synthetic_observation(
        bb.cameras, bb.vision.image_size, history=bb.history_frames, instruction=instruction, seed=seed
    )
    inputs = policy.prepare_inputs([obs])
    noise = torch.randn(
        1,
        policy.config.action_horizon,
        policy.config.action_head.max_action_dim,
        generator=torch.Generator().manual_seed(seed),
    )
    reference_backend = policy.prefix_backend
    with torch.inference_mode():
        mask = inputs["attention_mask"]
        vit = reference_backend.vision(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        features = reference_backend.language(inputs["input_ids"], mask, vit)
        reference = {"vision/vit_embeds": vit, "llm/backbone_features": features}
        reference.update(_prefix_outputs(reference_backend.vl_head(features, mask)))
        reference_chunk = policy.predict_chunk(obs, noise=noise).actions
    name = policy.use_prefix_backend([backend], artifacts=artifacts, engines=engines)
    with torch.inference_mode():
        candidate = _stage_outputs(policy.prefix_backend, inputs, reference)
        candidate_chunk = policy.predict_chunk(obs, noise=noise).actions
    comparisons = [compare(k, reference[k], candidate[k], precision) for k in reference]
    comparisons.append(
        compare(
            "end_to_end/actions",
            torch.from_numpy(reference_chunk),
            torch.from_numpy(candidate_chunk),
            precision,
        )
    )
    return ParityReport(name, precision, tuple(comparisons))
