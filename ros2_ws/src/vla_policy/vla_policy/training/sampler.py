"""Which windows each rank trains on, and the worker processes that build them.

A step's *global batch* is ``effective = batch_size x world_size x grad_accum`` windows: positions
``step * effective + [0, effective)`` of the epoch permutations of :class:`BatchBuilder` (without
replacement within an epoch, each epoch's permutation seeded by ``(seed, epoch)``). It is cut into
``world_size x grad_accum`` *micro-batches* of ``batch_size`` windows; micro-batch ``j`` of a step is
built with augmentation keyed by ``(seed, step, j)`` and its flow-matching noise is drawn from a torch
RNG seeded by ``(seed, step, j)``. Rank ``r`` takes micro-batches ``r * grad_accum + [0, grad_accum)``.

So what a step computes depends on the effective batch and the micro-batch size, never on how the
micro-batches are spread over ranks: 2 ranks x 1 micro-batch, 1 rank x 2 accumulated micro-batches and
4 ranks x 1 micro-batch of half the size (same effective batch) see the same windows in the same order,
and the first two the same noise as well. Resuming with another world size keeps the effective batch
(``resolve_accumulation``). Micro-batch 0 uses the keys of a single-process run without accumulation
(``BatchBuilder.build(step)``), so such runs are unchanged.

Batches are built on the host (CPU) in ``torch.utils.data`` worker processes, forked from the trainer so
that they share the decoded episodes without copying them, and pinned when the model is on a GPU so the
copy to the device overlaps the step.
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vla_policy.data.episode_dataset import AugmentConfig, BatchBuilder, WindowDataset


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


def micro_key(seed: int, step: int, j: int) -> list[int]:
    """The augmentation RNG key of micro-batch ``j`` of ``step`` (0: the key of ``BatchBuilder.build``)."""
    return [seed, 2, step] + ([j] if j else [])


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
    ``(step, j, batch, build_seconds)``."""

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
        idx: np.ndarray = self.builder.indices(step)[j * b : (j + 1) * b]
        batch = self.builder.build_indices(idx, micro_key(self.seed, step, j))
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
