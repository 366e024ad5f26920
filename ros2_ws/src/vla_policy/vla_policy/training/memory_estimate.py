"""What a training run holds in accelerator memory, computed without an accelerator.

``python -m vla_policy.training.memory_estimate --preset groot-n1.5 --batch-size 16 --world-sizes 1,8``

- Parameters, gradients and AdamW state, from the parameter counts of the model built on the meta device
  and the ``tune_*`` flags (:func:`~vla_policy.training.trainer.apply_tune_flags`, GR00T's fine-tuning
  defaults unless given): fp32 weights (the master copy, frozen parts included), an fp32 gradient and two
  fp32 AdamW moments per trainable parameter. DDP keeps all of it on every rank (its buckets are the
  gradients: ``gradient_as_bucket_view``); FSDP2 divides it by the ranks and gathers one unit at a time
  (the largest unit's weights and gradients are added).
- Activations saved for backward per sample: one forward pass of the trainable path on the CPU, counting
  the distinct storages that autograd saves (``saved_tensors_hooks``), at batch 1 and 2 (the difference is
  the per-sample cost). Only the modules that run with gradients are materialised, in bf16 (random
  values; shapes are what count), so a full-size head fits in a few GB of host memory; the fp32 figure is
  twice the floating-point bytes. With bf16 autocast the true figure lies between the two (autocast keeps
  norms and reductions in fp32). Transient buffers of the backward pass and the allocator's slack are not
  counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    preset: str
    tune_flags: dict[str, bool]
    parameters: int
    trainable: int
    largest_fsdp_unit: int  # parameters of the largest FSDP2 unit
    activations_bf16_per_sample: int  # bytes saved for backward, all floating tensors bf16
    activations_fp32_per_sample: int

    def static_bytes(self, world_size: int, strategy: str) -> dict[str, float]:
        """Bytes per rank: weights, gradients, AdamW moments (and FSDP's gathered unit)."""
        weights, grads, adam = 4 * self.parameters, 4 * self.trainable, 8 * self.trainable
        if strategy == "fsdp" and world_size > 1:
            unit = 8 * self.largest_fsdp_unit  # its full weights and full gradients while it runs
            return {
                "weights": weights / world_size,
                "gradients": grads / world_size,
                "adamw": adam / world_size,
                "gathered_unit": unit,
            }
        return {"weights": weights, "gradients": grads, "adamw": adam, "gathered_unit": 0}

    def table(self, batch_size: int, world_sizes: Sequence[int]) -> str:
        """Markdown: GiB per rank for DDP and FSDP2 at each world size."""
        head = "| strategy | ranks | weights | gradients | AdamW | FSDP unit | activations bf16 / fp32 |"
        rows = [head + " total bf16 / fp32 |", "|---|---|---|---|---|---|---|---|"]
        act16 = batch_size * self.activations_bf16_per_sample / GIB
        act32 = batch_size * self.activations_fp32_per_sample / GIB
        for strategy in ("ddp", "fsdp"):
            for n in world_sizes:
                if strategy == "fsdp" and n == 1:
                    continue
                s = {k: v / GIB for k, v in self.static_bytes(n, strategy).items()}
                static = sum(s.values())
                name = strategy if n > 1 else "single"
                rows.append(
                    f"| {name} | {n} | {s['weights']:.1f} | {s['gradients']:.1f} | "
                    f"{s['adamw']:.1f} | {s['gathered_unit']:.1f} | {act16:.1f} / {act32:.1f} | "
                    f"{static + act16:.1f} / {static + act32:.1f} |"
                )
        return "\n".join(rows)


def _meta_policy(preset: str, flags: dict[str, bool | None]) -> Any:
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset
    from vla_policy.training.trainer import TrainConfig, apply_tune_flags

    with torch.device("meta"):
        policy = VLAPolicy(get_preset(preset), device="meta", dtype=torch.bfloat16)
    used = apply_tune_flags(policy, TrainConfig(**flags), fine_tune=True, resumed=False)
    return policy, used


def _materialise(module: torch.nn.Module) -> None:
    """Host memory for a meta module, filled with small random values (their shapes are what count)."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.02)
        for b in module.buffers():
            if b.is_floating_point():
                b.zero_()


def _saved_bytes(policy: Any, batch: dict[str, Any]) -> tuple[int, int]:
    """(floating, other) bytes of the distinct non-parameter storages one forward saves for backward."""
    params = {p.untyped_storage().data_ptr() for p in policy.model.parameters() if p.device.type == "cpu"}
    saved: dict[int, tuple[int, bool]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = (st.nbytes(), t.is_floating_point())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        policy.compute_loss(batch)
    floating = sum(n for n, f in saved.values() if f)
    return floating, sum(n for n, f in saved.values() if not f)


def estimate(preset: str, flags: dict[str, bool | None] | None = None) -> MemoryEstimate:
    """The estimate for ``preset`` with the given ``tune_*`` flags (None: GR00T's fine-tuning default)."""
    from vla_policy.observation import synthetic_observation
    from vla_policy.training.distributed import FSDP_UNIT_LISTS, FSDP_UNIT_MODULES
    from vla_policy.training.sampler import HostBatchMaker

    policy, used = _meta_policy(preset, flags or {})
    model = policy.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    names = dict(model.named_modules())
    units = [m for p in FSDP_UNIT_LISTS if p in names for m in names[p].children()]
    units += [names[p] for p in FSDP_UNIT_MODULES if p in names]
    largest = max((sum(p.numel() for p in u.parameters()) for u in units), default=0)

    backbone_trains = used["tune_visual"] or used["tune_llm"]
    # the modules that run with gradients hold host memory; a frozen backbone's output is given instead
    _materialise(model.action_head)
    _materialise(model.backbone.eagle_linear)
    if backbone_trains:
        _materialise(model.backbone)
    model.train()  # dropout saves its masks
    cfg = policy.config
    maker = HostBatchMaker(policy)
    counts = []
    for b in (1, 2):
        obs = [
            synthetic_observation(
                cfg.backbone.cameras,
                cfg.backbone.vision.image_size,
                16,
                cfg.backbone.history_frames,
                seed=i,
            )
            for i in range(b)
        ]
        batch = maker.make_batch(obs, [np.zeros((cfg.action_horizon, 16), np.float32)] * b)
        if not backbone_trains:
            length = batch["input_ids"].shape[1]
            batch["llm_hidden"] = torch.zeros(
                b, length, cfg.backbone.language.hidden_size, dtype=torch.bfloat16
            )
        batch = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in batch.items()}
        counts.append(_saved_bytes(policy, batch))
    (f1, o1), (f2, o2) = counts
    return MemoryEstimate(
        preset=preset,
        tune_flags=used,
        parameters=total,
        trainable=trainable,
        largest_fsdp_unit=largest,
        activations_bf16_per_sample=(f2 - f1) + (o2 - o1),
        activations_fp32_per_sample=2 * (f2 - f1) + (o2 - o1),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from vla_policy.training.trainer import TUNE_FLAGS

    p = argparse.ArgumentParser(prog="python -m vla_policy.training.memory_estimate", description=__doc__)
    p.add_argument("--preset", default="groot-n1.5")
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    p.add_argument("--world-sizes", default="1,2,8", help="comma list of rank counts")
    for flag in TUNE_FLAGS:
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, action=argparse.BooleanOptionalAction)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        worlds = [int(w) for w in args.world_sizes.split(",") if w.strip()]
        est = estimate(args.preset, {f: getattr(args, f) for f in TUNE_FLAGS})
    except (ValueError, KeyError) as exc:
        sys.stderr.write(f"memory_estimate: error: {str(exc).splitlines()[0]}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(asdict(est), indent=1) + "\n")
    else:
        mib16, mib32 = est.activations_bf16_per_sample / 2**20, est.activations_fp32_per_sample / 2**20
        sys.stdout.write(
            f"{est.preset}: {est.parameters / 1e9:.3f} B parameters, {est.trainable / 1e9:.3f} B trainable "
            f"({est.tune_flags}); activations saved per sample: {mib16:.1f} MiB bf16, {mib32:.1f} MiB fp32; "
            f"GiB per rank at batch "
            f"{args.batch_size} per rank (computed, not measured):\n{est.table(args.batch_size, worlds)}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
