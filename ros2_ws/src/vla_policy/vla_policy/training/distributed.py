"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` under ``torchrun``.

``vla-policy train`` reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT`` or a c10d rendezvous) and, when there is more than one rank, joins the
process group: NCCL on GPUs, gloo on the CPU. One process per GPU, each on ``cuda:LOCAL_RANK``.

Strategies (``--strategy``):

- ``ddp`` (default): :class:`~torch.nn.parallel.DistributedDataParallel`. Every rank holds the whole model;
  gradients are averaged across ranks in buckets during backward. Frozen parameters (``tune_*`` flags,
  LoRA bases) are left out of DDP's bookkeeping because they do not require a gradient; trainable
  parameters that the loss never reaches (found by one probe step before wrapping) switch on
  ``find_unused_parameters``.
- ``fsdp``: FSDP2 (:func:`torch.distributed.fsdp.fully_shard`). Parameters, gradients and AdamW state are
  sharded across ranks (ZeRO-3); a unit's full parameters exist only while it runs. Units: each vision
  encoder layer, each LLM decoder layer, each ``vl_self_attention`` block, the DiT as a whole (its blocks'
  cross-attention K/V projections are called outside the blocks' forward), and the rest at the root.

The loss is wrapped in :class:`LossModule` so that the wrappers see it as a module's ``forward``.
Checkpoints hold full (unsharded) tensors, so a run saved with N ranks resumes with any other number.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("ddp", "fsdp")

# FSDP2 units (module paths from the policy's model): every child of these ModuleLists, and these modules
FSDP_UNIT_LISTS: tuple[str, ...] = (
    "backbone.eagle_model.vision_model.vision_model.encoder.layers",
    "backbone.eagle_model.language_model.model.layers",
    "action_head.vl_self_attention.transformer_blocks",
)
FSDP_UNIT_MODULES: tuple[str, ...] = ("action_head.model",)


class DistributedError(RuntimeError):
    """The distributed setup cannot work; one line says why."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job. ``world_size == 1``: a plain single process, no collectives."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    owns_group: bool = False  # this context initialised the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64 on the collective's device)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_gather_bytes(self, data: bytes) -> list[bytes]:
        """Equal-length byte strings from every rank, in rank order (no pickling)."""
        if not self.distributed:
            return [data]
        t = torch.tensor(list(data), dtype=torch.uint8, device=self._comm_device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return [bytes(o.cpu().tolist()) for o in out]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistContext:
    """Join the ``torchrun`` job described by the environment (a single process when there is none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DistributedError(f"unknown device {device!r}; expected cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(f"device {device} asked for, but torch sees no CUDA GPU")
        if world > 1 and dev.index is not None:
            raise DistributedError(f"--device {device} under torchrun: pass --device cuda (one GPU per rank)")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    else:
        backend = dist.get_backend()
    ctx = DistContext(dist.get_rank(), local_rank, dist.get_world_size(), dev, backend, owns)
    logger.info("rank %d of %d (local %d) on %s, %s", ctx.rank, ctx.world_size, local_rank, dev, backend)
    return ctx


class LossModule(nn.Module):
    """The policy's flow-matching loss as a module: ``forward(batch) -> loss []``. DDP and FSDP hook a
    module's forward, and ``VLAPolicy.compute_loss`` reaches the weights through ``policy.model``, which is
    registered here as ``model``."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.model = policy.model
        self._policy = policy

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._policy.compute_loss(batch)


def unused_trainable_parameters(loss_module: LossModule, batch: dict[str, Any]) -> list[str]:
    """Names of trainable parameters that one backward pass leaves without a gradient (the RNG and the
    gradients are restored)."""
    with torch.random.fork_rng(devices=[]):
        loss_module(batch).backward()
    names = [n for n, p in loss_module.model.named_parameters() if p.requires_grad and p.grad is None]
    loss_module.model.zero_grad(set_to_none=True)
    return names


def wrap(loss_module: LossModule, ctx: DistContext, strategy: str, probe: dict[str, Any] | None) -> nn.Module:
    """``loss_module`` as the engine that trains it: itself (one process), DDP or FSDP2."""
    if strategy not in STRATEGIES:
        raise DistributedError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not ctx.distributed:
        return loss_module
    if strategy == "ddp":
        unused = unused_trainable_parameters(loss_module, probe) if probe is not None else []
        if unused:
            logger.warning(
                "%d trainable parameters get no gradient (e.g. %s): DDP runs with find_unused_parameters",
                len(unused),
                unused[0],
            )
        return nn.parallel.DistributedDataParallel(
            loss_module,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
            gradient_as_bucket_view=True,  # the gradients live in DDP's buckets: no second copy
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    model = loss_module.model
    names = dict(model.named_modules())
    units = [f"{p}.{c}" for p in FSDP_UNIT_LISTS if p in names for c, _ in names[p].named_children()]
    units += [p for p in FSDP_UNIT_MODULES if p in names]
    for name in sorted(units, key=lambda u: -u.count(".")):  # innermost first
        fully_shard(names[name], mesh=mesh)
    fully_shard(loss_module, mesh=mesh)
    logger.info("FSDP2: %d units + root over %d ranks", len(units), ctx.world_size)
    return loss_module


@contextlib.contextmanager
def gradient_sync(engine: nn.Module, enabled: bool) -> Iterator[None]:
    """Forward and backward of an accumulated micro-batch: ``enabled=False`` keeps the gradients local
    (DDP ``no_sync``, FSDP2 ``set_requires_gradient_sync``) until the last micro-batch of the step."""
    if isinstance(engine, nn.parallel.DistributedDataParallel):
        with contextlib.nullcontext() if enabled else engine.no_sync():
            yield
        return
    if hasattr(engine, "set_requires_gradient_sync"):  # FSDP2 module
        engine.set_requires_gradient_sync(enabled)
    yield


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded DTensor (a collective: every rank calls it), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every sharded tensor gathered, in key order (every rank calls it)."""
    return {k: full_tensor(v).detach() for k, v in state.items()}


def shard_like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``full`` laid out as ``param`` (this rank's shard of a DTensor parameter; as is otherwise)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and full.shape == param.shape:
        # every rank read the same file: each keeps its own shard, nothing is sent
        mesh, placements = param.device_mesh, param.placements
        return distribute_tensor(full.to(param.device), mesh, placements, src_data_rank=None)
    return full


def weights_digest(state: dict[str, torch.Tensor]) -> bytes:
    """SHA-256 over the names and bytes of a (full) state dict: equal digests, equal weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().to("cpu").contiguous().reshape(-1)
        h.update(k.encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.digest()
