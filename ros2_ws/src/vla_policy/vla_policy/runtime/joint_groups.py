"""Map a robot's joints onto the policy's action groups and back.

The head's output per step is ``[left_arm 7, right_arm 7, claw 2]``. Each group lists joint names; joint i
of a group uses head dim i of that group, and head dims past the listed joints are ignored. The model's
state vector is the measured positions of the same joints in the same order (left, right, claw).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vla_policy.strict_config import require

GROUP_NAMES: tuple[str, ...] = ("left_arm", "right_arm", "claw")
GROUP_DIMS: dict[str, int] = {"left_arm": 7, "right_arm": 7, "claw": 2}
GROUP_OFFSETS: dict[str, int] = {"left_arm": 0, "right_arm": 7, "claw": 14}
ACTION_DIM: int = 16


class JointMappingError(ValueError):
    """A JointState cannot be mapped to the state vector (missing joint, NaN, bad lengths)."""


@dataclass(frozen=True)
class JointGroups:
    """Joint names per group; built with ``strict_config.from_dict`` from YAML/params."""

    left_arm: tuple[str, ...] = ()
    right_arm: tuple[str, ...] = ()
    claw: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for group in GROUP_NAMES:
            names = getattr(self, group)
            if isinstance(names, list):
                object.__setattr__(self, group, tuple(names))
                names = getattr(self, group)
            require(isinstance(names, tuple), f"JointGroups.{group}: expected a list of joint names")
            require(
                all(isinstance(n, str) and n for n in names),
                f"JointGroups.{group}: joint names must be non-empty strings",
            )
            require(
                len(names) <= GROUP_DIMS[group],
                f"JointGroups.{group}: {len(names)} joints listed, at most {GROUP_DIMS[group]} allowed",
            )
        all_names = self.joint_names
        dups = sorted({n for n in all_names if all_names.count(n) > 1})
        require(not dups, f"JointGroups: duplicate joint names {dups}")
        require(bool(all_names), "JointGroups: no joints listed")

    @property
    def joint_names(self) -> tuple[str, ...]:
        """All joints in state-vector order (left, right, claw)."""
        return self.left_arm + self.right_arm + self.claw

    @property
    def state_dim(self) -> int:
        return len(self.joint_names)

    def group(self, name: str) -> tuple[str, ...]:
        if name not in GROUP_NAMES:
            raise KeyError(f"unknown group '{name}'; groups: {', '.join(GROUP_NAMES)}")
        return getattr(self, name)

    @property
    def active_groups(self) -> tuple[str, ...]:
        """Groups with at least one joint."""
        return tuple(g for g in GROUP_NAMES if getattr(self, g))

    def action_indices(self) -> np.ndarray:
        """Head dims (into the 16-D action) of the listed joints, in state-vector order."""
        idx = [GROUP_OFFSETS[g] + i for g in GROUP_NAMES for i in range(len(getattr(self, g)))]
        return np.asarray(idx, dtype=np.int64)

    def state_from_joint_state(
        self, names: Sequence[str], positions: Sequence[float] | np.ndarray
    ) -> np.ndarray:
        """Positions of the listed joints (any order in the message) as float32 [state_dim].

        Unknown extra joints in the message are ignored. Missing joints, mismatched lengths,
        duplicate names and non-finite positions raise ``JointMappingError``.
        """
        names = list(names)
        pos = np.asarray(positions, dtype=np.float64).ravel()
        if len(names) != pos.size:
            raise JointMappingError(f"JointState has {len(names)} names but {pos.size} positions")
        index: dict[str, int] = {}
        for i, n in enumerate(names):
            if n in index:
                raise JointMappingError(f"JointState lists joint '{n}' twice")
            index[n] = i
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise JointMappingError(f"JointState is missing joints {missing}")
        state = pos[[index[n] for n in self.joint_names]]
        bad = [n for n, v in zip(self.joint_names, state, strict=True) if not math.isfinite(v)]
        if bad:
            raise JointMappingError(f"JointState has non-finite positions for {bad}")
        return state.astype(np.float32)

    def state_from_mapping(self, positions: Mapping[str, float]) -> np.ndarray:
        """Same as ``state_from_joint_state`` from a name -> position mapping."""
        return self.state_from_joint_state(list(positions.keys()), list(positions.values()))

    def split_actions(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Head output [T, 16] (or [16]) -> per-group arrays [T, n_joints] of the listed joints.

        Groups with no joints are left out.
        """
        arr = np.asarray(actions)
        single = arr.ndim == 1
        if single:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] < ACTION_DIM:
            raise JointMappingError(f"actions must be [T, {ACTION_DIM}], got {list(np.shape(actions))}")
        out: dict[str, np.ndarray] = {}
        for g in self.active_groups:
            n = len(getattr(self, g))
            part = arr[:, GROUP_OFFSETS[g] : GROUP_OFFSETS[g] + n]
            out[g] = part[0] if single else part
        return out

    def select_actions(self, actions: np.ndarray) -> np.ndarray:
        """Head output [..., 16] -> [..., state_dim] in state-vector order."""
        return np.asarray(actions)[..., self.action_indices()]

    def expand_to_actions(self, values: np.ndarray, fill: np.ndarray | float = 0.0) -> np.ndarray:
        """Inverse of ``select_actions``: [..., state_dim] -> [..., 16] (unlisted dims from ``fill``)."""
        values = np.asarray(values)
        shape = (*values.shape[:-1], ACTION_DIM)
        out = np.broadcast_to(np.asarray(fill, dtype=values.dtype), shape).copy()
        out[..., self.action_indices()] = values
        return out
