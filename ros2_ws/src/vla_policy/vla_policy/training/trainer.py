"""Fine-tuning from episode bags: ``vla-policy train``.

``--data DIR`` (episode bags, see :mod:`vla_policy.data.episode_dataset`) and ``--preset P`` (random init) or
``--checkpoint DIR`` (fine-tune) -> ``--out DIR``, which is itself a checkpoint directory
(``config.json``, ``model.safetensors``, ``statistics.json``, loadable with ``VLAPolicy.from_checkpoint``)
plus the training state and the metrics:

- ``train_state.json``: step, total steps, the training config, the data split, scheduler state and the
  torch RNG state; ``optimizer.safetensors``: AdamW's per-parameter tensors. Nothing is pickled.
- ``metrics.jsonl``: one JSON object per logged step (``loss``, ``lr``, ``grad_norm``, ``samples_per_s``)
  and per validation (``val_loss``); TensorBoard event files under ``tensorboard/`` too when
  ``torch.utils.tensorboard`` imports (the ``tensorboard`` package is not a dependency).

The loss is the policy's flow-matching loss (``policy.compute_loss``); AdamW runs over
``policy.trainable_parameters()`` (the ``tune_*`` flags of the config); the learning rate warms up
linearly and then follows a cosine to ``min_lr_ratio * lr`` at ``steps``; gradients are clipped by norm.

Exact resume: the batch of step ``s`` (indices, augmentation) is a pure function of ``(seed, s)``, and
the torch RNG (flow-matching noise and timesteps) is re-seeded from ``(seed, s)`` before every step, so
``--resume`` from a checkpoint written at step ``k`` reproduces the uninterrupted run bit for bit on the
same machine and device. On CPU, MKL's multi-threaded GEMM is not bitwise reproducible from run to run
(two uninterrupted runs differ by ~1e-7 in the loss, ~1e-5 in the weights after a few AdamW steps), so
bitwise equality needs ``MKL_NUM_THREADS=1`` (or ``torch.set_num_threads(1)``); the batch-building
threads do not affect it. ``--stop-at K`` ends a run after step ``K`` as an interruption would (Ctrl-C
also saves the state before exiting).

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
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vla_policy.data.episode_bag import EpisodeBagError, one_line
from vla_policy.data.episode_dataset import (
    AugmentConfig,
    BatchBuilder,
    DatasetError,
    Prefetcher,
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

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.jsonl"
LORA_FILE = "lora.safetensors"
LORA_TARGETS: tuple[str, ...] = ("llm", "dit")
TRAIN_STATE_VERSION = 1


class TrainError(RuntimeError):
    """Training cannot start or continue; one line says why."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    min_lr_ratio: float = 0.0
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 50
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    val_every: int = 0  # steps between validations (0 = 10 per run)
    val_batches: int = 4
    save_every: int = 0  # steps between checkpoints (0 = at the end only)
    log_every: int = 1
    augment: bool = True
    seed: int = 0
    stride: int = 1
    workers: int = 2  # threads decoding bags and building batches
    prefetch: int = 4  # batches built ahead
    device: str = "cpu"
    progress: bool = True
    lora_rank: int = 0  # 0 = no LoRA
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def check(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            problems.append(f"warmup steps must be >= 0, got {self.warmup_steps}")
        if not self.grad_clip >= 0:
            problems.append(f"grad clip must be >= 0 (0 = off), got {self.grad_clip}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val fraction must be in [0, 1), got {self.val_fraction}")
        if self.stride < 1:
            problems.append(f"stride must be >= 1, got {self.stride}")
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


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, 3, stream, step]).generate_state(1, np.uint64)[0] >> 1)


# --- optimizer state without pickle ---------------------------------------------------------------------
def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> dict[str, Any]:
    """Tensors to ``optimizer.safetensors``; returns the JSON-able rest (param groups, scalar state)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tmp = directory / (OPTIMIZER_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(directory / OPTIMIZER_FILE)
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path, meta: dict[str, Any]) -> None:
    tensors = load_file(str(directory / OPTIMIZER_FILE))
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
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


def _read_config(params: str | Path | None) -> EvalConfig:
    cfg = EvalConfig(progress=False, plots=False)
    if params:
        cfg = config_from_node_params(read_node_params(params), cfg)
    return cfg


def _build_policy(preset: str | None, checkpoint: str | Path | None, device: str, seed: int) -> Any:
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


def _save_lora(policy: Any, cfg: TrainConfig, out: Path) -> None:
    from vla_policy.model.lora import LoRALinear

    tensors: dict[str, torch.Tensor] = {}
    for path in _lora_target_names(policy, cfg):
        for name, t in policy.model.get_submodule(path).state_dict().items():
            if not name.endswith(("lora_a", "lora_b")):
                tensors[f"base.{path}.{name.replace('base.', '')}"] = t.detach().contiguous()
    for name, m in policy.model.named_modules():
        if isinstance(m, LoRALinear):
            tensors[f"adapter.{name}.lora_a"] = m.lora_a.detach().contiguous()
            tensors[f"adapter.{name}.lora_b"] = m.lora_b.detach().contiguous()
    tmp = out / (LORA_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / LORA_FILE)


def _validate(policy: Any, builder: BatchBuilder | None, cfg: TrainConfig) -> float | None:
    """Mean flow-matching loss over fixed held-out batches with fixed noise (no augmentation)."""
    if builder is None:
        return None
    n = len(builder.dataset)
    bs = cfg.batch_size
    # evenly spread windows, the same at every validation
    idx = np.linspace(0, n - 1, num=min(n, bs * cfg.val_batches)).round().astype(np.int64)
    losses = []
    policy.model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for b in range(0, len(idx), bs):
            torch.manual_seed(step_seed(cfg.seed, b, stream=1))
            batch = builder.build_indices(idx[b : b + bs], [cfg.seed, 4, b], augment=False)
            losses.append(float(policy.compute_loss(batch)) * len(idx[b : b + bs]))
    policy.model.train()
    return sum(losses) / len(idx)


def save_train_state(
    policy: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    out: Path,
    step: int,
    cfg: TrainConfig,
    extra: dict[str, Any],
) -> None:
    """The checkpoint (weights + statistics) and the training state, all safetensors / JSON."""
    if cfg.lora_rank:
        from vla_policy.model.lora import merged_state_dict

        merged = merged_state_dict(policy.model)
        save_checkpoint(out, policy.config, merged, policy.normalizer, random_init=False)
        _save_lora(policy, cfg, out)
    else:
        policy.save(out, random_init=False)
    opt_meta = save_optimizer(optimizer, out)
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
    from tqdm import tqdm

    cfg.check()
    out = Path(out)
    state: dict[str, Any] | None = None
    if resume:
        if not (out / STATE_FILE).is_file() or not (out / OPTIMIZER_FILE).is_file():
            raise TrainError(f"--resume: {out} has no {STATE_FILE} / {OPTIMIZER_FILE} from an earlier run")
        try:
            state = json.loads((out / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"--resume: {out / STATE_FILE} is corrupt ({exc})") from exc
        checkpoint, preset = out, None
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
    elif (out / STATE_FILE).is_file():
        raise TrainError(
            f"{out} already holds a training run; pass --resume to continue it or pick a new --out"
        )
    if preset is None and checkpoint is None:
        raise TrainError("give --preset or --checkpoint")
    torch.manual_seed(cfg.seed)
    policy = _build_policy(preset, checkpoint, cfg.device, cfg.seed)
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
    if state is None:
        stats = compute_statistics(train_eps)
        policy.normalizer = Normalizer(stats, policy.config.normalization)
    train_ds, val_ds = WindowDataset(train_eps), WindowDataset(val_eps)
    augment = AugmentConfig(enabled=cfg.augment)
    builder = BatchBuilder(policy, train_ds, cfg.batch_size, cfg.seed, augment)
    val_builder = BatchBuilder(policy, val_ds, cfg.batch_size, cfg.seed, augment) if len(val_ds) else None
    logger.info(
        "data: %d train / %d val windows from %d bags in %.1f s",
        len(train_ds),
        len(val_ds),
        len(bags),
        load_s,
    )

    # ---- optimisation -----------------------------------------------------------------------------
    if cfg.lora_rank:
        saved = load_file(str(out / LORA_FILE)) if state is not None and (out / LORA_FILE).is_file() else None
        if state is not None and saved is None:
            raise TrainError(f"--resume: {out} has no {LORA_FILE} from the LoRA run")
        n_lora = apply_lora(policy, cfg, saved)
        logger.info("LoRA rank %d on %s: %d adapter parameters", cfg.lora_rank, cfg.lora_targets, n_lora)
    params_list = list(policy.trainable_parameters())
    logger.info("trainable parameters: %d", sum(p.numel() for p in params_list))
    if not params_list:
        raise TrainError("no trainable parameters: every tune_* flag is off")
    optimizer = torch.optim.AdamW(
        params_list, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=False
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    )
    start = 0
    if state is not None:
        load_optimizer(optimizer, out, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(torch.tensor(state["rng"]["torch_cpu"], dtype=torch.uint8))
        start = int(state["step"])
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None and not resume and (Path(checkpoint) / "tokenizer.json").is_file():
        shutil.copyfile(Path(checkpoint) / "tokenizer.json", out / "tokenizer.json")
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    val_every = cfg.val_every or max(1, cfg.steps // 10)
    metrics = MetricsLog(out, start if state is not None else None)
    extra = {
        "split": split,
        "data": {**describe_episodes(episodes), "train_windows": len(train_ds), "val_windows": len(val_ds)},
        "model_source": str(checkpoint) if checkpoint is not None else f"preset:{preset}",
    }
    if state is not None:
        extra["model_source"] = state.get("model_source", extra["model_source"])

    policy.model.train()
    first_loss = last_loss = val_loss = None
    prefetch = Prefetcher(builder.build, start, end, cfg.workers, cfg.prefetch)
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="train",
        unit="step",
        file=sys.stderr,
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    step = start
    t_train = time.perf_counter()
    compute_s = 0.0
    window_t, window_n = time.perf_counter(), 0
    interrupted = False
    try:
        while step < end:
            batch = prefetch.get()
            tc = time.perf_counter()
            torch.manual_seed(step_seed(cfg.seed, step))
            loss = policy.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params_list, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            )
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            compute_s += time.perf_counter() - tc
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainError(f"the loss became {value} at step {step}; lower --lr or check the data")
            first_loss = value if first_loss is None else first_loss
            last_loss = value
            window_n += cfg.batch_size
            now = time.perf_counter()
            sps = window_n / max(now - window_t, 1e-9)
            if step % cfg.log_every == 0 or step == end:
                metrics.write(
                    {
                        "step": step,
                        "loss": value,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "samples_per_s": sps,
                    }
                )
            if now - window_t > 5.0:
                window_t, window_n = now, 0
            bar.set_postfix(loss=f"{value:.4f}", samples_s=f"{sps:.1f}", refresh=False)
            bar.update(1)
            if step % val_every == 0 or step == cfg.steps:
                val_loss = _validate(policy, val_builder, cfg)
                if val_loss is not None:
                    metrics.write({"step": step, "val_loss": val_loss})
            if cfg.save_every and step % cfg.save_every == 0 and step < end:
                save_train_state(policy, optimizer, scheduler, out, step, cfg, extra)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted at step %d: saving the training state", step)
    finally:
        bar.close()
        prefetch.close()
    train_s = time.perf_counter() - t_train
    done = step - start
    built = prefetch.build_seconds
    summary = {
        "step": step,
        "steps": cfg.steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "val_loss": val_loss,
        "data_load_s": round(load_s, 3),
        "train_s": round(train_s, 3),
        "train_samples_per_s": round(done * cfg.batch_size / train_s, 2) if done else None,
        "compute_samples_per_s": round(done * cfg.batch_size / compute_s, 2) if compute_s else None,
        # one build thread's rate x threads: what the loaders can supply when not starved of CPU
        "loading_samples_per_s_per_thread": (
            round(len(built) * cfg.batch_size / sum(built), 2) if built and sum(built) else None
        ),
        "loading_threads": cfg.workers,
        "data_wait_fraction": round(prefetch.wait_seconds / train_s, 4) if train_s else None,
        "interrupted": interrupted,
        **extra["data"],
    }
    extra["last_run"] = summary
    save_train_state(policy, optimizer, scheduler, out, step, cfg, extra)
    metrics.close()
    if interrupted:
        raise KeyboardInterrupt
    return TrainResult(out, step, first_loss, last_loss, val_loss, summary)


def bench_loading(
    data: str | Path, preset: str, batches: int, cfg: TrainConfig, params: str | Path | None = None
) -> dict[str, Any]:
    """Samples per second of data loading alone (bag decoding, then batch building in threads)."""
    policy = _build_policy(preset, None, cfg.device, cfg.seed)
    t0 = time.perf_counter()
    episodes = load_episodes(
        find_bags(data),
        dataset_config_for(policy.config, _read_config(params), stride=cfg.stride),
        cfg.workers,
    )
    decode_s = time.perf_counter() - t0
    policy.normalizer = Normalizer(compute_statistics(episodes), policy.config.normalization)
    ds = WindowDataset(episodes)
    builder = BatchBuilder(policy, ds, cfg.batch_size, cfg.seed, AugmentConfig(enabled=cfg.augment))
    pre = Prefetcher(builder.build, 0, batches, cfg.workers, cfg.prefetch)
    t1 = time.perf_counter()
    for _ in range(batches):
        pre.get()
    wall = time.perf_counter() - t1
    pre.close()
    return {
        "windows": len(ds),
        "decode_s": round(decode_s, 3),
        "decode_windows_per_s": round(len(ds) / decode_s, 1),
        "batches": batches,
        "loading_samples_per_s": round(batches * cfg.batch_size / wall, 1),
    }


# --- CLI ------------------------------------------------------------------------------------------------
def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="fine-tune on episode bags (flow matching, AdamW, warm-up + cosine)",
        description="Train a policy on a directory of episode bags and write a checkpoint directory "
        "(safetensors) with train_state.json, optimizer.safetensors and metrics.jsonl into --out.",
    )
    p.add_argument("--data", required=True, help="directory of episode bags (rosbag2, MCAP or sqlite3)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="start from a randomly initialised preset (e.g. tiny)")
    src.add_argument("--checkpoint", help="start from a checkpoint directory (fine-tune)")
    p.add_argument("--out", required=True, help="output directory (a checkpoint plus training state)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"total optimiser steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay:g}")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"default {d.warmup_steps}")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0 = off)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="held-out episodes fraction")
    p.add_argument("--val-every", type=int, default=0, help="steps between validations (0 = 10 per run)")
    p.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0 = end only)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics rows")
    p.add_argument("--no-augment", action="store_true", help="no colour jitter / random crop")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--stop-at", type=int, default=None, help="end this run after step N (resume later)")
    p.add_argument("--params", default=None, help="node parameter YAML: joints, cameras, controllers")
    p.add_argument("--seed", type=int, default=d.seed, help="init, split, batch and noise seed")
    p.add_argument("--stride", type=int, default=d.stride, help="ticks between training windows")
    p.add_argument("--workers", type=int, default=d.workers, help="loading threads (0 = none)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--bench-loading", type=int, default=0, metavar="N", help="only time N batches of loading")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on the targets (0 = off, default)")
    p.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help=f"default {d.lora_alpha:g}")
    p.add_argument(
        "--lora-targets", default=",".join(LORA_TARGETS), help=f"comma list of {', '.join(LORA_TARGETS)}"
    )
    p.set_defaults(func=cmd_train)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        grad_clip=args.grad_clip,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        save_every=args.save_every,
        log_every=max(1, args.log_every),
        augment=not args.no_augment,
        seed=args.seed,
        stride=args.stride,
        workers=max(0, args.workers),
        device=args.device,
        progress=not args.no_progress,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
    )
    try:
        if args.bench_loading:
            cfg.check()
            res = bench_loading(args.data, args.preset or "tiny", args.bench_loading, cfg, args.params)
            sys.stdout.write(json.dumps(res, indent=1) + "\n")
            return 0
        if not args.resume and not (args.preset or args.checkpoint):
            raise TrainError("give --preset P or --checkpoint DIR (or --resume)")
        result = train(
            args.data,
            args.out,
            cfg,
            preset=args.preset,
            checkpoint=args.checkpoint,
            params=args.params,
            resume=args.resume,
            stop_at=args.stop_at,
        )
    except (TrainError, DatasetError, EvalError, EpisodeBagError) as exc:
        sys.stderr.write(f"vla-policy train: error: {one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"vla-policy train: interrupted; continue with --resume --out {args.out}\n")
        return 130
    s = result.summary
    if args.json:
        sys.stdout.write(json.dumps(s, indent=1) + "\n")
    else:
        load = s["loading_samples_per_s_per_thread"]
        sys.stdout.write(
            f"step {s['step']}/{s['steps']}: loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, "
            f"val_loss {s['val_loss']}, {s['train_samples_per_s']} samples/s training "
            f"(loading {load} samples/s per thread x {s['loading_threads']}, "
            f"waited on data {100 * (s['data_wait_fraction'] or 0):.1f}%); checkpoint: {result.out}\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-policy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
