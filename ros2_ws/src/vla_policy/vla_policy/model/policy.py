"""The policy: observation in, unnormalised action chunk out.

``encode_prefix`` (backbone + vlln + vl_self_attention + cross-attention K/V, once per chunk) and
``expert.predict_chunk`` (K denoising steps) are the split the export pipeline follows.
Action experts are pluggable: ``config.expert`` picks a class from ``experts.registry.EXPERTS``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vla_policy.backends.prefix_backend import PrefixBackend, TorchPrefixBackend, select_prefix_backend
from vla_policy.model.backbone import EagleBackbone
from vla_policy.model.checkpoint import CheckpointError, check_keys, load_checkpoint, save_checkpoint
from vla_policy.model.config import BackboneConfig, ModelConfig
from vla_policy.model.experts.registry import EXPERTS, build_expert
from vla_policy.model.flow_matching import RTCGuidance, make_rtc_target
from vla_policy.model.image_preprocessing import preprocess_images
from vla_policy.model.normalization import Normalizer
from vla_policy.model.tokenizer import TextTokenizer, build_prompts, load_tokenizer
from vla_policy.observation import ActionChunkResult, Observation, PrefixOutput
from vla_policy.strict_config import ConfigError

__all__ = [
    "EXPERTS",
    "ActionChunkResult",
    "Observation",
    "PrefixOutput",
    "VLAModel",
    "VLAPolicy",
]

logger = logging.getLogger(__name__)


def build_backbone(config: BackboneConfig) -> EagleBackbone:
    """EagleBackbone, or CogVLABackbone (a subclass) when ``config.cogvla`` is set."""
    if config.cogvla is None:
        return EagleBackbone(config)
    from vla_policy.model.cogvla.backbone import CogVLABackbone

    return CogVLABackbone(config)


class VLAModel(nn.Module):
    """All weights: ``backbone.*`` (Eagle) and ``action_head.*`` (the expert), as in GR00T N1.5."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(config.backbone)  # CogVLABackbone when backbone.cogvla is set
        self.action_head = build_expert(config)
        if hasattr(self.action_head, "attach_backbone"):  # layer-KV experts run the LLM layers themselves
            self.action_head.attach_backbone(self.backbone)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device: no memory, no initialisation
    (a checkpoint's weights are assigned next). Buffers (RoPE frequencies, position ids) stay real."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def trainable_groups(model: VLAModel, config: ModelConfig) -> dict[str, tuple[bool, list[nn.Module]]]:
    """Flag -> (value, modules it controls), following GR00T N1.5's fine-tuning flags.

    With the reference decoder layout the groups are GR00T's exactly: ``tune_projector`` covers the state
    and action encoders, the action decoder and the position embedding, while vlln, vl_self_attention and
    the future tokens always train. The split layout keeps the seed's grouping (all of them projector).
    """
    eagle = model.backbone.eagle_model
    head = model.action_head
    reference = config.decoder.layout == "reference"
    projector_names = (
        ("state_encoder", "action_encoder", "action_decoder", "position_embedding")
        if reference
        else (
            "vlln",
            "vl_self_attention",
            "state_encoder",
            "action_encoder",
            "position_embedding",
            "future_tokens",
            "shared_arm_decoder",
            "action_arm_decoder",
            "action_claw_decoder",
        )
    )
    projector = [getattr(head, n) for n in projector_names if isinstance(getattr(head, n, None), nn.Module)]
    always_names = ("vlln", "vl_self_attention", "future_tokens") if reference else ()
    always = [getattr(head, n) for n in always_names if isinstance(getattr(head, n, None), nn.Module)]
    diffusion = [head.model] if isinstance(getattr(head, "model", None), nn.Module) else []
    return {
        "tune_visual": (config.backbone.tune_visual, [eagle.vision_model, eagle.mlp1]),
        "tune_llm": (config.backbone.tune_llm, [eagle.language_model]),
        "tune_projector": (config.action_head.tune_projector, projector),
        "tune_diffusion_model": (config.action_head.tune_diffusion_model, diffusion),
        # eagle_linear has no flag of its own: always trainable (GR00T N1.5)
        "always": (True, [model.backbone.eagle_linear, *always]),
    }


def _any_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class VLAPolicy:
    """GR00T N1.5-style policy. ``VLAPolicy(config)`` is randomly initialised (``seed`` for reproducibility);
    ``VLAPolicy.from_checkpoint(path)`` loads weights, statistics and tokenizer from a directory."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        normalizer: Normalizer | None = None,
        tokenizer: TextTokenizer | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int | None = 0,
        weights: dict[str, torch.Tensor] | None = None,
        weights_source: str = "weights",
    ) -> None:
        """``weights`` (a full state dict, checked key by key and shape by shape; ``weights_source`` names
        it in the error) are assigned to a model built on the meta device: nothing is initialised or
        allocated twice."""
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.tokenizer = tokenizer or load_tokenizer(config.backbone)
        if self.tokenizer.vocab_size > config.backbone.language.vocab_size:
            raise ConfigError(
                f"tokenizer has {self.tokenizer.vocab_size} tokens but language.vocab_size is "
                f"{config.backbone.language.vocab_size}"
            )
        h = config.action_head
        self.normalizer = normalizer or Normalizer.identity(
            h.max_state_dim, h.action_dim, config.normalization
        )
        if weights is not None:
            with parameters_on_meta():
                self.model = VLAModel(config)
            check_keys(self.model, weights, weights_source)
            self.model.load_state_dict(weights, strict=True, assign=True)
        else:
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                self.model = VLAModel(config)
        self.model.to(device=self.device, dtype=dtype).eval()
        self.model.backbone.set_image_token_id(self.tokenizer.image_id)
        self.apply_trainable_flags()
        self.digest: str | None = None
        self.random_init = True
        # torch by default; an exported runtime is swapped in with use_prefix_backend()
        self.prefix_backend: PrefixBackend = TorchPrefixBackend(self)

    # ---- loading / saving -------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> VLAPolicy:
        ckpt = load_checkpoint(path, dtype=dtype)
        try:
            tokenizer = load_tokenizer(ckpt.config.backbone, path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(str(exc)) from exc
        policy = cls(
            ckpt.config,
            normalizer=ckpt.normalizer,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
            seed=None,
            weights=ckpt.state_dict,
            weights_source=str(path),
        )
        policy.digest = ckpt.digest
        policy.random_init = ckpt.random_init
        logger.info("loaded %s from %s (random_init=%s)", policy.name, path, ckpt.random_init)
        return policy

    def save(
        self, path: str | Path, random_init: bool | None = None, max_shard_bytes: int | None = None
    ) -> Path:
        out = save_checkpoint(
            path,
            self.config,
            self.model.state_dict(),
            self.normalizer,
            random_init=self.random_init if random_init is None else random_init,
            max_shard_bytes=max_shard_bytes,
        )
        self.tokenizer.save_files(out)
        return out

    @property
    def name(self) -> str:
        """``<model name>@<sha256[:12] of the weights>`` (``@unsaved`` when not loaded from disk)."""
        return f"{self.config.name}@{self.digest[:12] if self.digest else 'unsaved'}"

    def use_prefix_backend(
        self,
        order: Sequence[str] = ("torch",),
        artifacts: str | Path | None = None,
        engines: str | Path | None = None,
    ) -> str:
        """Pick the first prefix backend of ``order`` that loads (see prefix_backend.py); returns its name."""
        self.prefix_backend = select_prefix_backend(
            self,
            order,
            artifacts=Path(artifacts) if artifacts else None,
            engines=Path(engines) if engines else None,
        )
        return self.prefix_backend.name

    @property
    def expert(self) -> nn.Module:
        return self.model.action_head

    # ---- training flags ------------------------------------------------------------------------------
    def apply_trainable_flags(self) -> None:
        """Set requires_grad from tune_visual / tune_llm / tune_projector / tune_diffusion_model."""
        for _flag, (value, modules) in trainable_groups(self.model, self.config).items():
            for m in modules:
                m.requires_grad_(value)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    # ---- inputs -----------------------------------------------------------------------------------
    def prepare_state(self, states: Sequence[np.ndarray]) -> torch.Tensor:
        """Raw state vectors (any length <= max_state_dim) -> normalised, zero-padded [B, max_state_dim]."""
        max_dim = self.config.action_head.max_state_dim
        out = torch.zeros(len(states), max_dim, dtype=self.dtype)
        for i, s in enumerate(states):
            s = np.asarray(s, dtype=np.float32).reshape(-1)
            if s.shape[0] > max_dim:
                raise ValueError(f"state has {s.shape[0]} dims, more than max_state_dim {max_dim}")
            if not np.all(np.isfinite(s)):
                raise ValueError("state contains NaN or infinite values")
            out[i, : s.shape[0]] = torch.from_numpy(self.normalizer.normalize_state(s).astype(np.float32))
        return out.to(self.device)

    def prepare_inputs(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        """-> pixel_values [B*V*F, 3, S, S], input_ids [B, L], attention_mask [B, L] bool."""
        pixel_values = preprocess_images([o.images for o in observations], self.config.backbone)
        prompts = build_prompts(self.tokenizer, [o.instruction for o in observations], self.config.backbone)
        return {
            "pixel_values": pixel_values.to(self.device, self.dtype),
            "input_ids": prompts.input_ids.to(self.device),
            "attention_mask": prompts.attention_mask.to(self.device),
        }

    # ---- prefix -----------------------------------------------------------------------------------
    def encode_prefix(self, observations: Sequence[Observation] | Observation) -> PrefixOutput:
        """Observations -> PrefixOutput (features [B, L, D_vl], mask [B, L], cross_kv per cross block)."""
        if isinstance(observations, Observation):
            observations = [observations]
        return self.encode_prefix_timed(observations)[0]

    def encode_prefix_timed(
        self, observations: Sequence[Observation], with_cross_kv: bool = True
    ) -> tuple[PrefixOutput, dict[str, float]]:
        timings: dict[str, float] = {}
        t0 = self.clock()
        inputs = self.prepare_inputs(observations)
        t1 = self.clock()
        backend = self.prefix_backend
        # the prompt conditions the ViT only for CogVLA (FiLM/router); other backbones ignore it
        vit = backend.vision(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        t2 = self.clock()
        feats = backend.language(inputs["input_ids"], inputs["attention_mask"], vit)
        t3 = self.clock()
        if with_cross_kv:
            prefix = backend.vl_head(feats, inputs["attention_mask"])
        else:  # the uncached reference path of the bench: K/V recomputed by every denoising step
            prefix = self.expert.prepare_prefix(feats, inputs["attention_mask"], with_cross_kv=False)
        t4 = self.clock()
        timings.update(preprocess=t1 - t0, vision=t2 - t1, llm=t3 - t2, vl_self_attention=t4 - t3)
        return prefix, timings

    # ---- inference --------------------------------------------------------------------------------
    def predict_chunk(
        self,
        obs: Observation,
        *,
        seed: int | None = None,
        noise: torch.Tensor | None = None,
        rtc: RTCGuidance | None = None,
    ) -> ActionChunkResult:
        """One chunk for one observation -> unnormalised actions [T, action_width] (16 with the split decoder,
        max_action_dim with the reference one) and the groups of ``config.action_layout``, with timings.

        ``seed`` draws the initial noise from a private generator (bitwise reproducible on CPU); ``noise``
        [1, T, max_action_dim] or [T, max_action_dim] overrides it. ``rtc`` guides toward the previous chunk.
        """
        h = self.config.action_head
        t_start = self.clock()
        # RTC needs autograd through the denoiser: inference_mode tensors cannot enter autograd
        ctx = torch.no_grad() if rtc is not None else torch.inference_mode()
        with ctx:
            prefix, timings = self.encode_prefix_timed([obs])
            state = self.prepare_state([obs.state])
            if noise is None:
                gen = torch.Generator(device=self.device)
                if seed is None:
                    gen.seed()  # fresh entropy without touching the global RNG
                else:
                    gen.manual_seed(seed)
                noise = torch.randn(
                    1,
                    self.config.action_horizon,
                    h.max_action_dim,
                    generator=gen,
                    device=self.device,
                    dtype=self.dtype,
                )
            noise = noise.to(self.device, self.dtype)
            if noise.ndim == 2:
                noise = noise[None]
            target = None
            if rtc is not None:
                target = make_rtc_target(
                    rtc,
                    self.normalizer.normalize_action,
                    self.config.action_horizon,
                    h.max_action_dim,
                    device=self.device,
                    dtype=self.dtype,
                )
            t0 = self.clock()
            actions = self.expert.predict_chunk(
                prefix, state, noise, target, embodiment_id=self.embodiment_of(obs), timings=timings
            )
            t1 = self.clock()
            out = self.normalizer.unnormalize_action(actions[0].float().cpu().numpy()).astype(np.float32)
        t2 = self.clock()
        timings.update(expert=t1 - t0, unnormalize=t2 - t1, total=t2 - t_start)
        groups = {name: out[:, sl] for name, sl in self.config.decoder.groups.items()}
        return ActionChunkResult(actions=out, groups=groups, dt=self.config.dt, timings=timings)

    def embodiment_of(self, obs: Observation) -> int:
        """The observation's embodiment id; 0 (the Observation default) means the checkpoint's own."""
        return obs.embodiment_id or self.config.embodiment_id

    # ---- training ---------------------------------------------------------------------------------
    def make_batch(
        self, observations: Sequence[Observation], actions: Sequence[np.ndarray]
    ) -> dict[str, Any]:
        """Observations + raw action chunks [T, d <= 16] -> training batch of normalised, padded tensors."""
        h = self.config.action_head
        batch: dict[str, Any] = dict(self.prepare_inputs(observations))
        batch["state"] = self.prepare_state([o.state for o in observations])
        act = torch.zeros(len(actions), self.config.action_horizon, h.max_action_dim, dtype=self.dtype)
        mask = torch.zeros_like(act, dtype=torch.bool)
        for i, a in enumerate(actions):
            a = np.asarray(a, dtype=np.float32)
            if a.shape[0] != self.config.action_horizon or a.shape[1] > h.action_dim:
                raise ValueError(
                    f"action chunk must be [{self.config.action_horizon}, <= {h.action_dim}], got {a.shape}"
                )
            act[i, :, : a.shape[1]] = torch.from_numpy(self.normalizer.normalize_action(a).astype(np.float32))
            mask[i, :, : a.shape[1]] = True
        batch["action"] = act.to(self.device)
        batch["action_mask"] = mask.to(self.device)
        batch["embodiment_id"] = torch.tensor(
            [self.embodiment_of(o) for o in observations], device=self.device
        )
        return batch

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Flow-matching loss of a batch from :meth:`make_batch` (or the same keys precomputed); optional
        ``noise`` and ``t`` fix the draws of the GR00T expert's loss."""
        cfg = self.config.backbone
        bb = self.model.backbone
        if getattr(self.expert, "uses_layer_kv", False):  # deep_fusion / kv_cache_expert: LLM inputs
            with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.tune_visual):
                vit = bb.encode_images(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
            embeds = self.expert.embed_prefix(batch["input_ids"], batch["attention_mask"], vit)
            prefix = self.expert.prepare_prefix(embeds, batch["attention_mask"], with_cross_kv=False)
            return self.expert.compute_loss(
                prefix, batch["state"], batch["action"], batch["action_mask"], batch.get("embodiment_id")
            )
        if "llm_hidden" in batch:
            hidden = batch["llm_hidden"]  # precomputed by :meth:`cache_backbone` (frozen backbone)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.tune_visual):
                vit = bb.encode_images(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
            # LoRA adapters make a frozen LLM trainable: ask the parameters, not only the flags
            llm_grad = cfg.tune_llm or cfg.tune_visual or _any_trainable(bb.eagle_model.language_model)
            with torch.set_grad_enabled(torch.is_grad_enabled() and llm_grad):
                hidden = bb.llm_hidden(batch["input_ids"], batch["attention_mask"], vit)
        feats = bb.eagle_linear(hidden)  # trainable regardless of the backbone flags
        prefix = self.expert.prepare_prefix(feats, batch["attention_mask"], with_cross_kv=False)
        return self.expert.compute_loss(
            prefix,
            batch["state"],
            batch["action"],
            batch["action_mask"],
            batch.get("embodiment_id"),
            noise=batch.get("noise"),  # optional: fixed flow-matching noise [B, T, max_action_dim]
            t=batch.get("t"),  # and time [B] (drawn when absent)
        )

    def cache_backbone(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add ``llm_hidden`` [B, L, D] so compute_loss skips the backbone; only valid while it is frozen."""
        if self.config.backbone.tune_visual or self.config.backbone.tune_llm:
            raise ValueError("cache_backbone needs tune_visual and tune_llm off")
        with torch.no_grad():
            vit = self.model.backbone.encode_images(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
            )
            hidden = self.model.backbone.llm_hidden(batch["input_ids"], batch["attention_mask"], vit)
        return {**batch, "llm_hidden": hidden}

    def clock(self) -> float:
        """perf_counter after synchronising the device, for stage timings."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
