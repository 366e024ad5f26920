"""Which windows each rank trains on, with which randomness, and the worker processes that build them.

A step's *global batch* is ``effective = batch_size x world_size x grad_accum`` windows: positions
``step * effective + [0, effective)`` of the epoch permutations of :class:`BatchBuilder` (without
replacement within an epoch, each epoch's permutation seeded by ``(seed, epoch)``). It is cut into
``world_size x grad_accum`` *micro-batches* of ``batch_size`` windows; rank ``r`` takes micro-batches
``r * grad_accum + [0, grad_accum)``.

The window at place ``q`` of the global batch gets its augmentation and its flow-matching noise and time
from RNGs keyed by ``(seed, step, q)``, whichever micro-batch carries it (the GR00T expert's loss takes
them from the batch, ``noise`` and ``t``). Dropout, and the noise of experts that draw their own, come
from the torch RNG seeded by ``(seed, step, j)`` for micro-batch ``j``. So a step's gradient does not
depend on how its global batch is spread over ranks and accumulation: with dropout 0, 2 ranks x 2
windows, 1 rank x 4 windows and 1 rank x 2 x 2 accumulated agree to float rounding; with dropout, splits
with the same micro-batch size do. Resuming with another world size keeps the effective batch
(``resolve_accumulation``), so it continues with the same windows and the same draws.

Batches are built on the host (CPU) in ``torch.utils.data`` worker processes, forked from the trainer so
that they share the decoded episodes without copying them, and pinned when the model is on a GPU so that
the copy to the device overlaps the step.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vla_policy.data.episode_dataset import AugmentConfig, BatchBuilder, WindowDataset
from vla_policy.model.flow_matching import sample_time


class BatchPlanError(ValueError):
    """The batch sizes do not fit together; one line says why."""


@dataclass(frozen=True)
class BatchPlan:
    """How a step's global batch is split: ``batch_size`` windows per micro-batch, ``grad_accum``
    micro-batches per rank, ``world_size`` ranks."""

    batch_size: int
    world_size: int = 1
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if min(self.batch_size, self.world_size, self.grad_accum) < 1:
            raise BatchPlanError(f"batch size, world size and accumulation must be >= 1: {self}")

    @property
    def effective(self) -> int:
        """Windows per optimiser step, over all ranks and accumulated micro-batches."""
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def micro_batches(self) -> int:
        return self.world_size * self.grad_accum

    def micro_index(self, rank: int, m: int) -> int:
        """The global index ``j`` of rank ``rank``'s ``m``-th micro-batch of a step."""
        return rank * self.grad_accum + m

    def describe(self) -> str:
        return (
            f"effective batch {self.effective} = {self.batch_size} per rank x {self.world_size} "
            f"rank{'s' if self.world_size > 1 else ''} x {self.grad_accum} accumulation"
        )


def resolve_accumulation(batch_size: int, world_size: int, requested: int, effective: int | None) -> int:
    """The accumulation to use: ``requested`` when > 0 (checked against a resumed run's ``effective``
    batch), else 1 for a new run or what keeps the resumed run's effective batch on ``world_size`` ranks."""
    if effective is None:
        return requested or 1
    per_step = batch_size * world_size
    if requested:
        if per_step * requested != effective:
            raise BatchPlanError(
                f"--resume: the run's effective batch is {effective}, but {batch_size} per rank x "
                f"{world_size} ranks x {requested} accumulation = {per_step * requested}"
            )
        return requested
    if effective % per_step:
        raise BatchPlanError(
            f"--resume: the run's effective batch {effective} is not a multiple of {batch_size} per rank x "
            f"{world_size} ranks; pick --batch-size so that it is"
        )
    return effective // per_step


def torch_seed(key: Sequence[int]) -> int:
    """A torch seed (63 bits) drawn from an integer key."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def step_seed(seed: int, step: int, stream: int = 0, micro: int = 0) -> int:
    """The torch seed of micro-batch ``micro`` of ``step`` (``stream`` 1: validation batches)."""
    return torch_seed([seed, 3, stream, step] + ([micro] if micro else []))


def flow_draws(
    keys: Sequence[Sequence[int]], head: Any, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One window per key: flow-matching noise [T, max_action_dim] like ``action`` [B, T, A] and time
    (GR00T's Beta schedule of the action head config ``head``) -> noise [B, T, A], t [B]."""
    noise, t = [], []
    for key in keys:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(key))
            noise.append(torch.randn(action.shape[1:], dtype=action.dtype))
            t.append(sample_time(1, head.noise_beta_alpha, head.noise_beta_beta, head.noise_s))
    return torch.stack(noise), torch.cat(t).to(action.dtype)


class HostBatchMaker:
    """``policy.make_batch`` on the host whatever the policy's device: worker processes must not touch
    CUDA, and a pinned host batch copies to the GPU asynchronously. Shares the policy's tokenizer,
    normalizer and config (the model is not used)."""

    def __init__(self, policy: Any) -> None:
        self._policy = copy.copy(policy)
        self._policy.device = torch.device("cpu")

    def make_batch(self, observations: Any, actions: Any) -> dict[str, Any]:
        return self._policy.make_batch(observations, actions)


class MicroBatches(Dataset):
    """Item ``k``: this rank's ``k % grad_accum``-th micro-batch of step ``start + k // grad_accum``, as
    ``(step, j, batch, build_seconds)``; the batch is ``policy.make_batch``'s plus the windows' flow-matching
    ``noise`` [B, T, max_action_dim] and ``t`` [B]."""

    def __init__(
        self,
        policy: Any,
        windows: WindowDataset,
        plan: BatchPlan,
        rank: int,
        seed: int,
        augment: AugmentConfig,
        start: int,
        stop: int,
    ) -> None:
        self.builder = BatchBuilder(HostBatchMaker(policy), windows, plan.effective, seed, augment)
        self.plan, self.rank, self.seed = plan, rank, seed
        self.action_head = policy.config.action_head
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.plan.grad_accum

    def __getitem__(self, k: int) -> tuple[int, int, dict[str, Any], float]:
        if not 0 <= k < len(self):
            raise IndexError(f"micro-batch {k} of {len(self)}")
        t0 = time.perf_counter()
        step = self.start + k // self.plan.grad_accum
        j = self.plan.micro_index(self.rank, k % self.plan.grad_accum)
        b = self.plan.batch_size
        places = range(j * b, (j + 1) * b)  # in the global batch
        idx: np.ndarray = self.builder.indices(step)[j * b : (j + 1) * b]
        keys = [[self.seed, 2, step, q] for q in places]
        batch = self.builder.build_indices(idx, keys[0], sample_keys=keys)
        noise_keys = [[self.seed, 5, step, q] for q in places]
        batch["noise"], batch["t"] = flow_draws(noise_keys, self.action_head, batch["action"])
        return step, j, batch, time.perf_counter() - t0


def micro_batch_loader(
    dataset: MicroBatches, workers: int, prefetch: int, pin_memory: bool
) -> DataLoader[tuple[int, int, dict[str, Any], float]]:
    """In order, ``workers`` processes (0: in the caller), ``prefetch`` micro-batches ahead per worker."""
    kw: dict[str, Any] = {}
    if workers > 0:
        kw["prefetch_factor"] = max(1, prefetch)
        if "fork" in multiprocessing.get_all_start_methods():  # share the episodes, do not pickle them
            kw["multiprocessing_context"] = "fork"
    return DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory, **kw
    )


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to ``device`` (asynchronously from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def timed_items(loader: DataLoader[Any]) -> Iterator[tuple[int, int, dict[str, Any], float, float]]:
    """``(step, j, batch, build_seconds, wait_seconds)``: the loader's items with the time spent
    waiting for each."""
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            step, j, batch, built = next(it)
        except StopIteration:
            return
        yield step, j, batch, built, time.perf_counter() - t0
