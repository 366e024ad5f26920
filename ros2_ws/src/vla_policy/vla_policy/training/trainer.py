"""Fine-tuning from episode bags: ``vla-policy train``, on one process or many (``torchrun``).

``--data DIR`` (episode bags, see :mod:`vla_policy.data.episode_dataset`) and ``--preset P`` (random init) or
``--init-from DIR`` (alias ``--checkpoint``: any checkpoint of this repository, an imported GR00T one
included) -> ``--out DIR``, which is itself a checkpoint directory (``config.json``, ``model.safetensors``,
``statistics.json``, loadable with ``VLAPolicy.from_checkpoint``) plus the training state and the metrics:

- ``train_state.json``: step, total steps, the training config, the batch plan (per-rank batch, ranks,
  accumulation, effective batch), the data split, scheduler state and the torch RNG state;
  ``optimizer.safetensors``: AdamW's per-parameter tensors, unsharded. Nothing is pickled.
- ``metrics.jsonl``: one JSON object per logged step (``loss``, ``lr``, ``grad_norm``, ``samples_per_s``,
  ``samples_per_s_per_rank``) and per validation (``val_loss``); TensorBoard event files under
  ``tensorboard/`` too when ``torch.utils.tensorboard`` imports (``tensorboard`` is not a dependency).

The loss is the policy's flow-matching loss (``policy.compute_loss``); AdamW runs over the trainable
parameters; the learning rate warms up linearly and then follows a cosine to ``min_lr_ratio * lr`` at
``steps``; gradients are clipped by their global norm (after the cross-rank average, so every rank clips
alike; under FSDP the norm is reduced over the shards).

What trains: the ``tune_*`` flags of GR00T N1.5 (``--tune-visual``, ``--tune-llm``, ``--tune-projector``,
``--tune-diffusion-model``). Unset, they are the preset's own for ``--preset`` (training from scratch) and
GR00T's fine-tuning defaults for ``--init-from`` (vision and LLM frozen, projector and DiT trained),
whatever the checkpoint's config says; the flags used are written to the output's ``config.json``.

Distributed (see :mod:`vla_policy.training.distributed` and :mod:`vla_policy.training.sampler`): under
``torchrun --nproc-per-node N`` every rank trains its own micro-batches of each step's global batch, DDP
(default) or FSDP2 averages the gradients, and rank 0 alone writes metrics and checkpoints. The effective
batch is ``--batch-size`` x ranks x ``--grad-accum``. Mixed precision: bf16 autocast on GPUs that have it,
fp32 on the CPU (``--precision``).

Exact resume: the windows of every step, their augmentation and their flow-matching noise and time are pure
functions of ``(seed, step, place in the step's global batch)``, and dropout of ``(seed, step, micro-batch)``
(:mod:`vla_policy.training.sampler`), so ``--resume`` from a checkpoint written at step ``k`` reproduces the
uninterrupted run bit for bit on the same machine, device and world size. With another world size the run
keeps its effective batch (the accumulation is chosen to match) and continues with the same windows and draws
(dropout's too when the per-rank batch is kept); the loss then agrees to float rounding (the gradients are
summed in another order). On CPU, MKL's multi-threaded GEMM is not bitwise reproducible from run to run (two
uninterrupted runs differ by ~1e-7 in the loss, ~1e-5 in the weights after a few AdamW steps), so bitwise
equality needs ``MKL_NUM_THREADS=1`` (or ``torch.set_num_threads(1)``; ``torchrun`` sets one thread per rank).
``--stop-at K`` ends a run after step ``K`` as an interruption would (Ctrl-C also saves the state before
exiting, except under FSDP, whose state is sharded: there the last ``--save-every`` checkpoint counts).

LoRA (``--lora-rank R``, ``--lora-targets llm,dit``): every ``nn.Linear`` of the targets is wrapped by
:class:`~vla_policy.model.lora.LoRALinear` (base frozen, A/B trained; other parameters follow the ``tune_*``
flags). The checkpoint in ``--out`` holds merged weights, so the node and the export never see an
adapter; ``lora.safetensors`` keeps the unmerged base weights of the targets and the adapters, from which
``--resume`` rebuilds the run exactly (merging and unmerging would not be bit-exact).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro
from safetensors.torch import load_file, save_file

from vla_policy.config_cli import add_subcommand, comma_list, run_command
from vla_policy.data.episode_bag import EpisodeBagError, one_line
from vla_policy.data.episode_dataset import (
    AugmentConfig,
    BatchBuilder,
    DatasetError,
    WindowDataset,
    compute_statistics,
    dataset_config_for,
    describe_episodes,
    find_bags,
    load_episodes,
    split_episodes,
)
from vla_policy.evaluation.offline_eval import (
    EvalConfig,
    EvalError,
    config_from_node_params,
    read_node_params,
)
from vla_policy.model.checkpoint import save_checkpoint
from vla_policy.model.normalization import Normalizer
from vla_policy.training.distributed import (
    STRATEGIES,
    DistContext,
    DistributedError,
    LossModule,
    full_state_dict,
    full_tensor,
    gradient_sync,
    init_distributed,
    shard_like,
    weights_digest,
    wrap,
)
from vla_policy.training.precision import PRECISIONS, PrecisionError, autocast, resolve_precision
from vla_policy.training.sampler import (
    BatchPlan,
    BatchPlanError,
    HostBatchMaker,
    MicroBatches,
    flow_draws,
    micro_batch_loader,
    resolve_accumulation,
    step_seed,
    timed_items,
    to_device,
)

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.jsonl"
LORA_FILE = "lora.safetensors"
LORA_TARGETS: tuple[str, ...] = ("llm", "dit")
TRAIN_STATE_VERSION = 2  # 2: batch plan (ranks, accumulation); 1 (single process) still resumes
TUNE_FLAGS: tuple[str, ...] = ("tune_visual", "tune_llm", "tune_projector", "tune_diffusion_model")
# GR00T N1.5's fine-tuning defaults (its gr00t_finetune script): the VLM frozen, projector and DiT trained
GROOT_FINETUNE_FLAGS: dict[str, bool] = {
    "tune_visual": False,
    "tune_llm": False,
    "tune_projector": True,
    "tune_diffusion_model": True,
}


class TrainError(RuntimeError):
    """Training cannot start or continue; one line says why."""


@dataclass(frozen=True)
class TrainConfig:
    """What and how to train (the flags of vla-policy train)."""

    steps: int = 2000
    """total optimiser steps"""
    batch_size: int = 8
    """samples per rank and micro-batch"""
    grad_accum: int = 0
    """micro-batches accumulated per step (0: 1, or on --resume what keeps the run's effective batch)"""
    lr: float = 1e-4
    """peak learning rate"""
    min_lr_ratio: float = 0.0
    """the cosine ends at this fraction of --lr"""
    weight_decay: float = 1e-5
    """AdamW weight decay"""
    betas: tuple[float, float] = (0.95, 0.999)
    """AdamW betas"""
    eps: float = 1e-8
    """AdamW epsilon"""
    warmup_steps: int = 50
    """linear warm-up steps"""
    grad_clip: float = 1.0
    """max global gradient norm (0 = off)"""
    val_fraction: float = 0.1
    """fraction of the episodes held out for validation"""
    val_every: int = 0
    """steps between validations (0 = 10 per run)"""
    val_batches: int = 4
    """batches per validation"""
    save_every: int = 0
    """steps between checkpoints (0 = at the end only)"""
    log_every: int = 1
    """steps between metrics rows"""
    augment: bool = True
    """colour jitter and random crop"""
    seed: int = 0
    """init, split, batch and noise seed"""
    stride: int = 1
    """ticks between training windows"""
    workers: int = 2
    """data-loading processes per rank (0 = in the trainer)"""
    prefetch: int = 4
    """micro-batches built ahead per worker"""
    device: str = "cpu"
    """cpu or cuda (under torchrun: cuda:LOCAL_RANK per rank)"""
    strategy: str = "ddp"
    """with several ranks: ddp or fsdp (FSDP2)"""
    precision: str = "auto"
    """auto (bf16 autocast on GPUs that have it, else fp32), fp32 or bf16"""
    check_replicas: bool = False
    """check after each step that every rank's weights agree (a digest per rank)"""
    progress: bool = True
    """progress bar"""
    lora_rank: int = 0
    """LoRA rank on the targets (0 = off)"""
    lora_alpha: float = 16.0
    """LoRA alpha"""
    lora_targets: Annotated[tuple[str, ...], comma_list("llm,dit")] = LORA_TARGETS
    """LoRA targets, among llm and dit"""
    keep_statistics: bool = False
    """with --init-from: keep the checkpoint's normalisation instead of computing it from --data (a
    fine-tuning round, e.g. DAgger, on data whose ranges differ a little)"""
    # None: the preset's flag (--preset), GR00T's fine-tuning default (--init-from), the run's (--resume)
    tune_visual: tyro.conf.DisallowNone[bool | None] = None
    """train SigLIP and the projector mlp1 (unset: off with --init-from, the preset's with --preset)"""
    tune_llm: tyro.conf.DisallowNone[bool | None] = None
    """train the LLM layers (unset: off with --init-from, the preset's with --preset)"""
    tune_projector: tyro.conf.DisallowNone[bool | None] = None
    """train the state/action encoders, decoders (unset: on with --init-from, the preset's with --preset)"""
    tune_diffusion_model: tyro.conf.DisallowNone[bool | None] = None
    """train the DiT (unset: on with --init-from, the preset's with --preset)"""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 0:
            problems.append(f"gradient accumulation must be >= 1 (0 = automatic), got {self.grad_accum}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            problems.append(f"warmup steps must be >= 0, got {self.warmup_steps}")
        if not self.grad_clip >= 0:
            problems.append(f"grad clip must be >= 0 (0 = off), got {self.grad_clip}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (all(0.0 <= b < 1.0 for b in self.betas) and len(self.betas) == 2):
            problems.append(f"betas must be two values in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            problems.append(f"eps must be > 0, got {self.eps}")
        for name in ("val_every", "save_every", "workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        for name in ("val_batches", "log_every", "prefetch"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val fraction must be in [0, 1), got {self.val_fraction}")
        if self.stride < 1:
            problems.append(f"stride must be >= 1, got {self.stride}")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.lora_rank < 0:
            problems.append(f"LoRA rank must be >= 0 (0 = off), got {self.lora_rank}")
        if not (self.lora_alpha > 0 and math.isfinite(self.lora_alpha)):
            problems.append(f"LoRA alpha must be > 0, got {self.lora_alpha}")
        unknown = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if unknown or not self.lora_targets:
            valid = ", ".join(LORA_TARGETS)
            problems.append(f"LoRA targets must be among {valid}, got {list(self.lora_targets)}")
        if problems:
            raise TrainError("; ".join(problems))

    def asked_tune_flags(self) -> dict[str, bool]:
        """The ``tune_*`` flags given explicitly."""
        return {f: v for f in TUNE_FLAGS if (v := getattr(self, f)) is not None}


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- optimizer state without pickle ---------------------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW's state as full (unsharded) host tensors ``"<param index>.<name>"`` and the JSON-able rest
    (param groups, scalar state). Under FSDP every rank calls it (the shards are gathered in key order)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid in sorted(sd["state"]):
        for k, v in sorted(sd["state"][pid].items()):
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = full_tensor(v).detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def load_optimizer(
    optimizer: torch.optim.Optimizer,
    directory: Path,
    meta: dict[str, Any],
    params: Sequence[torch.Tensor],
) -> None:
    """Restore ``optimizer.safetensors``; each rank keeps the shard of its (FSDP) parameters."""
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        if int(pid) >= len(params):
            raise TrainError(f"--resume: {OPTIMIZER_FILE} has state for more parameters than train now")
        state.setdefault(int(pid), {})[name] = shard_like(t, params[int(pid)])
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- metrics --------------------------------------------------------------------------------------------
class MetricsLog:
    """``metrics.jsonl`` (rows after the resumed step are dropped) and TensorBoard when available."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        self.path = out / METRICS_FILE
        if resume_step is None:
            self.path.write_text("")
        elif self.path.is_file():
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        self.fh = self.path.open("a")
        self.tb: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            logger.info("torch.utils.tensorboard unavailable (no tensorboard package): metrics.jsonl only")

    def write(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


# --- the run --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out: Path
    step: int
    first_loss: float | None
    last_loss: float | None
    val_loss: float | None
    summary: dict[str, Any]
    is_main: bool = True  # rank 0 (the one that wrote the files and reports)


def _read_config(params: str | Path | None) -> EvalConfig:
    cfg = EvalConfig(progress=False, plots=False)
    if params:
        cfg = config_from_node_params(read_node_params(params), cfg)
    return cfg


def _build_policy(
    preset: str | None, checkpoint: str | Path | None, device: str | torch.device, seed: int
) -> Any:
    from vla_policy.model.checkpoint import CheckpointError
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset
    from vla_policy.strict_config import ConfigError

    try:
        if checkpoint is not None:
            if not Path(checkpoint).exists():
                raise TrainError(f"checkpoint {checkpoint} does not exist")
            return VLAPolicy.from_checkpoint(checkpoint, device=device)
        return VLAPolicy(get_preset(preset or "tiny"), device=device, seed=seed)
    except (CheckpointError, ConfigError, ValueError, KeyError, OSError) as exc:
        raise TrainError(f"cannot build the model: {one_line(exc)}") from exc


def apply_tune_flags(policy: Any, cfg: TrainConfig, fine_tune: bool, resumed: bool) -> dict[str, bool]:
    """Set the ``tune_*`` flags on the policy's config and its parameters; returns the flags used.

    A resumed run keeps its own flags (asking for others is an error); a new run takes the explicit
    flags over GR00T's fine-tuning defaults (``fine_tune``) or over the preset's."""
    from vla_policy.strict_config import replace

    c = policy.config
    current = {
        "tune_visual": c.backbone.tune_visual,
        "tune_llm": c.backbone.tune_llm,
        "tune_projector": c.action_head.tune_projector,
        "tune_diffusion_model": c.action_head.tune_diffusion_model,
    }
    asked = cfg.asked_tune_flags()
    if resumed:
        differ = {f: v for f, v in asked.items() if current[f] != v}
        if differ:
            raise TrainError(f"--resume: the run trains with {current}, not {differ}")
        flags = current
    else:
        flags = {**(GROOT_FINETUNE_FLAGS if fine_tune else current), **asked}
    policy.config = replace(
        c,
        backbone=replace(c.backbone, tune_visual=flags["tune_visual"], tune_llm=flags["tune_llm"]),
        action_head=replace(
            c.action_head,
            tune_projector=flags["tune_projector"],
            tune_diffusion_model=flags["tune_diffusion_model"],
        ),
    )
    policy.apply_trainable_flags()
    return flags


# --- LoRA -----------------------------------------------------------------------------------------------
def _lora_target_names(policy: Any, cfg: TrainConfig) -> list[str]:
    """Module paths (from ``policy.model``) of the LoRA targets."""
    if getattr(policy.expert, "uses_layer_kv", False):
        raise TrainError(f"LoRA supports the DiT expert; {policy.config.expert} runs the LLM layers itself")
    paths = {"llm": "backbone.eagle_model.language_model", "dit": "action_head.model"}
    return [paths[t] for t in cfg.lora_targets]


def apply_lora(policy: Any, cfg: TrainConfig, saved: dict[str, torch.Tensor] | None = None) -> int:
    """Wrap the targets' Linear layers; with ``saved`` (``lora.safetensors``) restore the unmerged base
    weights first and the adapters after. Returns the number of adapter parameters."""
    from vla_policy.model.lora import LoRALinear, add_lora

    model = policy.model
    for path in _lora_target_names(policy, cfg):
        module = model.get_submodule(path)
        if saved is not None:
            with torch.no_grad():
                for name, t in module.state_dict().items():
                    key = f"base.{path}.{name}"
                    if key not in saved:
                        raise TrainError(f"--resume: {LORA_FILE} lacks {key}")
                    t.copy_(saved[key])
        add_lora(module, cfg.lora_rank, cfg.lora_alpha)
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            if saved is not None:
                with torch.no_grad():
                    m.lora_a.copy_(saved[f"adapter.{name}.lora_a"])
                    m.lora_b.copy_(saved[f"adapter.{name}.lora_b"])
            n += m.lora_a.numel() + m.lora_b.numel()
    return n


def _lora_tensors(policy: Any, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The unmerged base weights of the targets and the adapters, full (every rank calls it)."""
    from vla_policy.model.lora import LoRALinear

    tensors: dict[str, torch.Tensor] = {}
    for path in _lora_target_names(policy, cfg):
        for name, t in policy.model.get_submodule(path).state_dict().items():
            if not name.endswith(("lora_a", "lora_b")):
                tensors[f"base.{path}.{name.replace('base.', '')}"] = full_tensor(t).detach().contiguous()
    for name, m in policy.model.named_modules():
        if isinstance(m, LoRALinear):
            tensors[f"adapter.{name}.lora_a"] = full_tensor(m.lora_a).detach().contiguous()
            tensors[f"adapter.{name}.lora_b"] = full_tensor(m.lora_b).detach().contiguous()
    return tensors


def _model_state(policy: Any, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The checkpoint's weights (LoRA merged), full (every rank calls it)."""
    if cfg.lora_rank:
        from vla_policy.model.lora import merged_state_dict

        return full_state_dict(merged_state_dict(policy.model))
    return full_state_dict(policy.model.state_dict())


# --- one step, validation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Engine:
    """What trains: the wrapped loss (plain, DDP or FSDP2) with its place in the job and precision."""

    module: torch.nn.Module
    ctx: DistContext
    precision: str
    strategy: str
    policy_config: Any

    @property
    def sharded(self) -> bool:
        """Parameters and optimizer state are sharded: saving gathers them on every rank."""
        return self.ctx.distributed and self.strategy == "fsdp"

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        with autocast(self.precision, self.ctx.device):
            return self.module(batch)


def _validate(
    engine: Engine, builder: BatchBuilder | None, cfg: TrainConfig, plan: BatchPlan
) -> float | None:
    """Mean flow-matching loss over fixed held-out windows (``val_batches`` effective batches' worth) with
    fixed per-window noise and time, no augmentation. Batches of ``batch_size`` are spread over the
    ranks; every rank runs as many forwards (FSDP's collectives need it)."""
    if builder is None:
        return None
    ctx = engine.ctx
    n = len(builder.dataset)
    bs = cfg.batch_size
    # evenly spread windows, the same at every validation and for every split of the effective batch
    idx = np.linspace(0, n - 1, num=min(n, plan.effective * cfg.val_batches)).round().astype(np.int64)
    starts = list(range(0, len(idx), bs))
    head = engine.policy_config.action_head
    total = 0.0
    engine.module.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for r in range(math.ceil(len(starts) / ctx.world_size)):
            k = r * ctx.world_size + ctx.rank
            b = starts[k] if k < len(starts) else starts[0]  # a rank without a batch repeats one, unweighted
            places = range(b, min(b + bs, len(idx)))
            batch = builder.build_indices(idx[b : b + bs], [cfg.seed, 4, b], augment=False)
            batch["noise"], batch["t"] = flow_draws([[cfg.seed, 6, q] for q in places], head, batch["action"])
            torch.manual_seed(step_seed(cfg.seed, b, stream=1))  # experts that draw their own noise
            loss = float(engine.loss(to_device(batch, ctx.device)))
            if k < len(starts):
                total += loss * len(places)
    engine.module.train()
    return ctx.all_sum([total])[0] / len(idx)


def save_train_state(
    engine: Engine,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    out: Path,
    step: int,
    cfg: TrainConfig,
    extra: dict[str, Any],
) -> None:
    """The checkpoint (weights + statistics) and the training state, all safetensors / JSON, written by
    rank 0. Sharded (FSDP) state is gathered first, by every rank."""
    if not (engine.ctx.is_main or engine.sharded):
        return
    weights = _model_state(policy, cfg)
    lora = _lora_tensors(policy, cfg) if cfg.lora_rank else None
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    if not engine.ctx.is_main:
        return
    save_checkpoint(out, policy.config, weights, policy.normalizer, random_init=False)
    policy.tokenizer.save_files(out)  # an imported GR00T checkpoint's prompt files travel with it
    if lora is not None:
        _write_safetensors(lora, out / LORA_FILE)
    _write_safetensors(opt_tensors, out / OPTIMIZER_FILE)
    rng = {"torch_cpu": torch.get_rng_state().tolist()}
    state = {
        "format": "vla_policy.train_state",
        "version": TRAIN_STATE_VERSION,
        "step": step,
        "config": asdict(cfg),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        **extra,
    }
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(out / STATE_FILE)


def _read_state(out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """``train_state.json`` of the run to resume, checked against ``cfg``."""
    if not (out / STATE_FILE).is_file() or not (out / OPTIMIZER_FILE).is_file():
        raise TrainError(f"--resume: {out} has no {STATE_FILE} / {OPTIMIZER_FILE} from an earlier run")
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"--resume: {out / STATE_FILE} is corrupt ({exc})") from exc
    if int(state.get("version", 0)) > TRAIN_STATE_VERSION:
        raise TrainError(f"--resume: {STATE_FILE} version {state.get('version')} is newer than this trainer")
    saved_lora = (
        int(state["config"].get("lora_rank", 0)),
        float(state["config"].get("lora_alpha", 16.0)),
        tuple(state["config"].get("lora_targets", LORA_TARGETS)),
    )
    if saved_lora[0] != cfg.lora_rank or (
        cfg.lora_rank and saved_lora != (cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets))
    ):
        raise TrainError(
            f"--resume: the run used LoRA rank/alpha/targets {saved_lora}, not "
            f"{(cfg.lora_rank, cfg.lora_alpha, tuple(cfg.lora_targets))}"
        )
    if int(state["config"]["steps"]) != cfg.steps:
        logger.warning("--steps changed on resume: the schedule differs from the first run's")
    return state


def train(
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    preset: str | None = None,
    checkpoint: str | Path | None = None,
    params: str | Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Train on this process's place in the ``torchrun`` job (a single process without one)."""
    cfg.check()
    try:
        ctx = init_distributed(cfg.device)
    except DistributedError as exc:
        raise TrainError(str(exc)) from exc
    try:
        return _train(ctx, Path(data), Path(out), cfg, preset, checkpoint, params, resume, stop_at)
    finally:
        ctx.close()


def _train(
    ctx: DistContext,
    data: Path,
    out: Path,
    cfg: TrainConfig,
    preset: str | None,
    checkpoint: str | Path | None,
    params: str | Path | None,
    resume: bool,
    stop_at: int | None,
) -> TrainResult:
    from tqdm import tqdm

    state: dict[str, Any] | None = None
    if resume:
        state = _read_state(out, cfg)
        checkpoint, preset = out, None
    elif (out / STATE_FILE).is_file():
        raise TrainError(
            f"{out} already holds a training run; pass --resume to continue it or pick a new --out"
        )
    if preset is None and checkpoint is None:
        raise TrainError("give --preset or --init-from")
    try:
        precision = resolve_precision(cfg.precision, ctx.device)
    except PrecisionError as exc:
        raise TrainError(str(exc)) from exc
    torch.manual_seed(cfg.seed)
    policy = _build_policy(preset, checkpoint, ctx.device, cfg.seed)
    flags = apply_tune_flags(policy, cfg, fine_tune=preset is None, resumed=state is not None)
    layer_kv = getattr(policy.expert, "uses_layer_kv", False)
    if cfg.strategy == "fsdp" and ctx.distributed and (layer_kv or policy.config.backbone.cogvla is not None):
        raise TrainError(
            f"--strategy fsdp supports the GR00T backbone and DiT expert; use ddp for {policy.config.name}"
        )
    read_cfg = _read_config(params)

    # ---- data -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    bags = find_bags(data)
    dcfg = dataset_config_for(policy.config, read_cfg, stride=cfg.stride)
    episodes = load_episodes(bags, dcfg, workers=max(1, cfg.workers))
    load_s = time.perf_counter() - t0
    train_eps, val_eps = split_episodes(episodes, cfg.val_fraction, cfg.seed)
    split = {"train": [e.path.name for e in train_eps], "val": [e.path.name for e in val_eps]}
    if state is not None and state.get("split") != split:
        raise TrainError("--resume: the data differ from the first run's (bags or split changed)")
    h = policy.config.action_head
    if train_eps[0].joints.state_dim > h.max_state_dim:
        raise TrainError(f"{train_eps[0].joints.state_dim} joints > max_state_dim {h.max_state_dim}")
    if state is None and not (cfg.keep_statistics and checkpoint is not None):
        stats = compute_statistics(train_eps)
        policy.normalizer = Normalizer(stats, policy.config.normalization)
    train_ds, val_ds = WindowDataset(train_eps), WindowDataset(val_eps)
    augment = AugmentConfig(enabled=cfg.augment)
    saved_effective = None
    if state is not None:  # version 1 runs were single-process without accumulation
        saved_effective = int(state.get("batch", {}).get("effective", state["config"]["batch_size"]))
    try:
        accum = resolve_accumulation(cfg.batch_size, ctx.world_size, cfg.grad_accum, saved_effective)
        plan = BatchPlan(cfg.batch_size, ctx.world_size, accum)
    except BatchPlanError as exc:
        raise TrainError(str(exc)) from exc
    val_builder = None
    if len(val_ds):
        val_builder = BatchBuilder(HostBatchMaker(policy), val_ds, cfg.batch_size, cfg.seed, augment)
    if ctx.is_main:
        logger.info(
            "data: %d train / %d val windows from %d bags in %.1f s; %s",
            len(train_ds),
            len(val_ds),
            len(bags),
            load_s,
            plan.describe(),
        )

    # ---- optimisation -----------------------------------------------------------------------------
    if cfg.lora_rank:
        saved = load_file(str(out / LORA_FILE)) if state is not None and (out / LORA_FILE).is_file() else None
        if state is not None and saved is None:
            raise TrainError(f"--resume: {out} has no {LORA_FILE} from the LoRA run")
        n_lora = apply_lora(policy, cfg, saved)
        logger.info("LoRA rank %d on %s: %d adapter parameters", cfg.lora_rank, cfg.lora_targets, n_lora)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    if not trainable:
        raise TrainError("no trainable parameters: every tune_* flag is off")
    start = int(state["step"]) if state is not None else 0
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    micro = MicroBatches(policy, train_ds, plan, ctx.rank, cfg.seed, augment, start, end)
    probe = None
    if ctx.distributed and cfg.strategy == "ddp" and len(micro):
        probe = to_device(micro[0][2], ctx.device)
    loss_module = LossModule(policy)
    policy.model.train()
    with autocast(precision, ctx.device):
        module = wrap(loss_module, ctx, cfg.strategy, probe)
    engine = Engine(module, ctx, precision, cfg.strategy, policy.config)
    params_list = [p for p in policy.model.parameters() if p.requires_grad]  # FSDP's sharded ones
    n_trainable = sum(p.numel() for p in params_list)  # a DTensor's numel is the whole tensor's
    logger.info("trainable parameters: %d (%s)", n_trainable, flags)
    optimizer = torch.optim.AdamW(
        params_list, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=False
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )
    if state is not None:
        if state.get("trainable", trainable) != trainable:
            raise TrainError("--resume: the trainable parameters differ from the run's (tune flags or LoRA)")
        load_optimizer(optimizer, out, state["optimizer"], params_list)
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(torch.tensor(state["rng"]["torch_cpu"], dtype=torch.uint8))
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is not None and not resume and (Path(checkpoint) / "tokenizer.json").is_file():
            shutil.copyfile(Path(checkpoint) / "tokenizer.json", out / "tokenizer.json")
    val_every = cfg.val_every or max(1, cfg.steps // 10)
    metrics = MetricsLog(out, start if state is not None else None) if ctx.is_main else None
    batch_info = {
        "per_rank": plan.batch_size,
        "world_size": plan.world_size,
        "grad_accum": plan.grad_accum,
        "effective": plan.effective,
    }
    extra = {
        "split": split,
        "data": {**describe_episodes(episodes), "train_windows": len(train_ds), "val_windows": len(val_ds)},
        "model_source": str(checkpoint) if checkpoint is not None else f"preset:{preset}",
        "batch": batch_info,
        "strategy": cfg.strategy if ctx.distributed else "single",
        "precision": precision,
        "tune_flags": flags,
        "trainable": trainable,
    }
    if state is not None:
        extra["model_source"] = state.get("model_source", extra["model_source"])

    first_loss = last_loss = val_loss = None
    loader = micro_batch_loader(micro, cfg.workers, cfg.prefetch, pin_memory=ctx.device.type == "cuda")
    items = timed_items(loader)
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=f"train (batch {plan.effective})",
        unit="step",
        file=sys.stderr,
        disable=not (cfg.progress and ctx.is_main),
        dynamic_ncols=True,
    )
    step = start
    t_train = time.perf_counter()
    compute_s = wait_s = 0.0
    built: list[float] = []
    window_t, window_n = time.perf_counter(), 0
    interrupted = False
    try:
        while step < end:
            optimizer.zero_grad(set_to_none=True)
            micro_losses = []
            for m in range(plan.grad_accum):
                item_step, j, batch, build_s, waited = next(items)
                assert item_step == step, (item_step, step)  # the loader yields in order
                built.append(build_s)
                wait_s += waited
                tc = time.perf_counter()
                batch = to_device(batch, ctx.device)
                torch.manual_seed(step_seed(cfg.seed, step, micro=j))
                with gradient_sync(engine.module, m == plan.grad_accum - 1):
                    loss = engine.loss(batch)
                    (loss / plan.grad_accum).backward()  # x / 1 is exact: one micro-batch is unchanged
                micro_losses.append(loss.detach())
                compute_s += time.perf_counter() - tc
            tc = time.perf_counter()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params_list, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            local = float(torch.stack(micro_losses).double().sum())
            value = ctx.all_sum([local])[0] / plan.micro_batches  # every rank: the step's mean loss
            compute_s += time.perf_counter() - tc
            step += 1
            if not math.isfinite(value):
                raise TrainError(f"the loss became {value} at step {step}; lower --lr or check the data")
            first_loss = value if first_loss is None else first_loss
            last_loss = value
            window_n += plan.effective
            now = time.perf_counter()
            sps = window_n / max(now - window_t, 1e-9)
            row: dict[str, Any] = {
                "step": step,
                "loss": value,
                "lr": lr,
                "grad_norm": float(full_tensor(grad_norm)),
                "samples_per_s": sps,
                "samples_per_s_per_rank": sps / ctx.world_size,
            }
            digests = None
            if cfg.check_replicas:
                digests = ctx.all_gather_bytes(weights_digest(full_state_dict(policy.model.state_dict())))
                row["replica_digests"] = [d.hex()[:16] for d in digests]
            if metrics is not None and (step % cfg.log_every == 0 or step == end or digests is not None):
                metrics.write(row)
            if digests is not None and len(set(digests)) > 1:
                raise TrainError(f"the ranks' weights differ after step {step}: {row['replica_digests']}")
            if now - window_t > 5.0:
                window_t, window_n = now, 0
            bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{sps:.1f}", refresh=False)
            bar.update(1)
            if step % val_every == 0 or step == cfg.steps:
                val_loss = _validate(engine, val_builder, cfg, plan)
                if val_loss is not None and metrics is not None:
                    metrics.write({"step": step, "val_loss": val_loss})
            if cfg.save_every and step % cfg.save_every == 0 and step < end:
                save_train_state(engine, policy, optimizer, scheduler, out, step, cfg, extra)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted at step %d: saving the training state", step)
    finally:
        bar.close()
        del items, loader  # stops the worker processes
    train_s = time.perf_counter() - t_train
    done = step - start
    n_built = len(built) * plan.batch_size
    summary = {
        "step": step,
        "steps": cfg.steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "val_loss": val_loss,
        "batch_size_per_rank": plan.batch_size,
        "world_size": plan.world_size,
        "grad_accum": plan.grad_accum,
        "effective_batch_size": plan.effective,
        "strategy": extra["strategy"],
        "precision": precision,
        "tune_flags": flags,
        "trainable_parameters": n_trainable,
        "data_load_s": round(load_s, 3),
        "train_s": round(train_s, 3),
        "train_samples_per_s": round(done * plan.effective / train_s, 2) if done else None,
        "train_samples_per_s_per_rank": (
            round(done * plan.effective / plan.world_size / train_s, 2) if done else None
        ),
        "compute_samples_per_s_per_rank": round(n_built / compute_s, 2) if compute_s else None,
        # one loading worker's rate (this rank's): what each worker supplies when not starved of CPU
        "loading_samples_per_s_per_worker": round(n_built / sum(built), 2) if built and sum(built) else None,
        "loading_workers": cfg.workers,
        "data_wait_fraction": round(wait_s / train_s, 4) if train_s else None,
        "interrupted": interrupted,
        **extra["data"],
    }
    extra["last_run"] = summary
    if interrupted and engine.sharded:
        logger.warning("FSDP state is sharded over the ranks: resume from the last --save-every checkpoint")
    else:
        save_train_state(engine, policy, optimizer, scheduler, out, step, cfg, extra)
    if metrics is not None:
        metrics.close()
    if interrupted:
        raise KeyboardInterrupt
    ctx.barrier()  # the files are written before any rank returns
    return TrainResult(out, step, first_loss, last_loss, val_loss, summary, ctx.is_main)


def bench_loading(
    data: str | Path, preset: str, batches: int, cfg: TrainConfig, params: str | Path | None = None
) -> dict[str, Any]:
    """Samples per second of data loading alone (bag decoding, then micro-batches from the workers)."""
    policy = _build_policy(preset, None, cfg.device, cfg.seed)
    t0 = time.perf_counter()
    episodes = load_episodes(
        find_bags(data),
        dataset_config_for(policy.config, _read_config(params), stride=cfg.stride),
        max(1, cfg.workers),
    )
    decode_s = time.perf_counter() - t0
    policy.normalizer = Normalizer(compute_statistics(episodes), policy.config.normalization)
    ds = WindowDataset(episodes)
    micro = MicroBatches(
        policy, ds, BatchPlan(cfg.batch_size), 0, cfg.seed, AugmentConfig(enabled=cfg.augment), 0, batches
    )
    loader = micro_batch_loader(micro, cfg.workers, cfg.prefetch, pin_memory=False)
    t1 = time.perf_counter()
    built = [build_s for _step, _j, _batch, build_s, _wait in timed_items(loader)]
    wall = time.perf_counter() - t1
    return {
        "windows": len(ds),
        "decode_s": round(decode_s, 3),
        "decode_windows_per_s": round(len(ds) / decode_s, 1),
        "batches": batches,
        "workers": cfg.workers,
        "loading_samples_per_s": round(batches * cfg.batch_size / wall, 1),
        "loading_samples_per_s_per_worker": round(batches * cfg.batch_size / sum(built), 1),
    }


# --- CLI ------------------------------------------------------------------------------------------------
_SOURCE = tyro.conf.create_mutex_group(required=False, title="model to start from")


@dataclass(frozen=True)
class TrainCommand:
    """Train a policy on episode bags (or a LeRobot dataset) and write a checkpoint directory (safetensors)
    with train_state.json, optimizer.safetensors and metrics.jsonl into --out. Under `torchrun
    --nproc-per-node N -m vla_policy.cli train ...` it trains data-parallel (DDP, or FSDP2 with --strategy
    fsdp); rank 0 writes the files."""

    data: str
    """directory of episode bags (rosbag2: MCAP or sqlite3) or a LeRobot dataset"""
    out: str
    """output directory (a checkpoint plus the training state)"""
    preset: Annotated[tyro.conf.DisallowNone[str | None], _SOURCE] = None
    """start from a randomly initialised preset (e.g. tiny)"""
    checkpoint: Annotated[
        tyro.conf.DisallowNone[str | None],
        _SOURCE,
        tyro.conf.arg(name="init-from", aliases=("--checkpoint",), metavar="CHECKPOINT_DIR"),
    ] = None
    """start from a checkpoint directory of this repository (e.g. one from `vla-policy import`)"""
    resume: bool = False
    """continue the run saved in --out (any world size)"""
    stop_at: tyro.conf.DisallowNone[int | None] = None
    """end this run after step N (resume later)"""
    params: tyro.conf.DisallowNone[str | None] = None
    """node parameter YAML: joints, cameras, controllers"""
    bench_loading: Annotated[int, tyro.conf.arg(metavar="N")] = 0
    """only time N batches of data loading"""
    json: bool = False
    """print the summary as JSON"""
    config: Annotated[TrainConfig, tyro.conf.OmitArgPrefixes] = TrainConfig()


def run_train(cmd: TrainCommand) -> int:
    """``vla-policy train`` with its parsed flags; the exit code."""
    cfg = cmd.config
    if cmd.bench_loading:
        res = bench_loading(cmd.data, cmd.preset or "tiny", cmd.bench_loading, cfg, cmd.params)
        sys.stdout.write(json.dumps(res, indent=1) + "\n")
        return 0
    if not cmd.resume and not (cmd.preset or cmd.checkpoint):
        raise TrainError("give --preset P or --init-from CHECKPOINT_DIR (or --resume)")
    try:
        result = train(
            cmd.data,
            cmd.out,
            cfg,
            preset=cmd.preset,
            checkpoint=cmd.checkpoint,
            params=cmd.params,
            resume=cmd.resume,
            stop_at=cmd.stop_at,
        )
    except KeyboardInterrupt:
        sys.stderr.write(f"vla-policy train: interrupted; continue with --resume --out {cmd.out}\n")
        return 130
    if not result.is_main:
        return 0
    s = result.summary
    if cmd.json:
        sys.stdout.write(json.dumps(s, indent=1) + "\n")
    else:
        workers = s["loading_workers"]
        load = f"{s['loading_samples_per_s_per_worker']} samples/s " + (
            f"per worker x {workers}" if workers else "in the trainer"
        )
        sys.stdout.write(
            f"step {s['step']}/{s['steps']}: loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, "
            f"val_loss {s['val_loss']}; effective batch {s['effective_batch_size']} = "
            f"{s['batch_size_per_rank']} per rank x {s['world_size']} ranks x {s['grad_accum']} accumulated; "
            f"{s['train_samples_per_s']} samples/s ({s['train_samples_per_s_per_rank']} per rank; "
            f"loading {load}, "
            f"waited on data {100 * (s['data_wait_fraction'] or 0):.1f}%); checkpoint: {result.out}\n"
        )
    return 0


def train_main(argv: Sequence[str]) -> int:
    """``vla-policy train ARGS``: the flags of :class:`TrainCommand`; bad input is one line, exit code 2."""
    errors = (TrainError, DatasetError, EvalError, EpisodeBagError)
    return run_command("vla-policy train", TrainCommand, argv, run_train, errors)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the ``vla-policy`` subparsers (flags: :class:`TrainCommand`)."""
    return add_subcommand(
        subparsers,
        "train",
        "fine-tune on episode bags (flow matching, AdamW, warm-up + cosine; torchrun for many GPUs)",
        train_main,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vla_policy.training.trainer`` (the same as ``vla-policy train``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return train_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
