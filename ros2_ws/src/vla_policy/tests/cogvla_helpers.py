"""Shared builders for the CogVLA tests: tiny policies with chosen options."""

from __future__ import annotations

import dataclasses

from vla_policy.model.cogvla.config import CogVLAConfig
from vla_policy.model.config import ModelConfig
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import Observation, synthetic_observation


def cog_config(**options: object) -> ModelConfig:
    base = get_preset("tiny-seed")  # CogVLA works on SigLIP's patch tokens: the seed's projector
    cog = CogVLAConfig(**options)  # type: ignore[arg-type]
    return dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, cogvla=cog))


def cog_policy(seed: int = 0, **options: object) -> VLAPolicy:
    return VLAPolicy(cog_config(**options), seed=seed)


def observation(policy: VLAPolicy, seed: int = 0, instruction: str = "pick up the red cube") -> Observation:
    bb = policy.config.backbone
    return synthetic_observation(bb.cameras, bb.vision.image_size, 16, seed=seed, instruction=instruction)
