"""Map a robot's joints onto the policy's action groups and back.

The model's action vector holds three groups (left arm, right arm, claw) at the indices of its
``ActionLayout``: the split decoder of checkpoints trained here emits ``[left_arm 7, right_arm 7, claw 2]``,
a reference GR00T N1.5 checkpoint a 32-dim action whose layout comes from its modality map. Each group
lists joint names; joint i of a group uses the group's i-th action index, and indices past the listed
joints are ignored. The model's state vector is the measured positions of the same joints in the same
order (left, right, claw).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_policy.strict_config import require

GROUP_NAMES: tuple[str, ...] = ("left_arm", "right_arm", "claw")


class JointMappingError(ValueError):
    """A JointState cannot be mapped to the state vector (missing joint, NaN, bad lengths)."""


@dataclass(frozen=True)
class ActionLayout:
    """The action indices of each group in the model's action vector [action_dim]."""

    left_arm: tuple[int, ...] = tuple(range(0, 7))
    right_arm: tuple[int, ...] = tuple(range(7, 14))
    claw: tuple[int, ...] = (14, 15)
    action_dim: int = 16

    def __post_init__(self) -> None:
        require(self.action_dim > 0, f"ActionLayout.action_dim must be > 0, got {self.action_dim}")
        used: list[int] = []
        for group in GROUP_NAMES:
            indices = tuple(int(i) for i in getattr(self, group))
            object.__setattr__(self, group, indices)
            require(
                all(0 <= i < self.action_dim for i in indices),
                f"ActionLayout.{group}: indices {list(indices)} outside [0, {self.action_dim})",
            )
            used.extend(indices)
        require(len(set(used)) == len(used), f"ActionLayout: an action index is used twice in {used}")

    @classmethod
    def from_spans(cls, spans: Mapping[str, tuple[int, int]], action_dim: int) -> ActionLayout:
        """From group -> (offset, size) contiguous spans."""
        unknown = sorted(set(spans) - set(GROUP_NAMES))
        require(not unknown, f"ActionLayout: unknown groups {unknown}; groups: {', '.join(GROUP_NAMES)}")
        return cls(
            **{g: tuple(range(spans[g][0], spans[g][0] + spans[g][1])) for g in spans},  # type: ignore[arg-type]
            action_dim=action_dim,
        )

    def group(self, name: str) -> tuple[int, ...]:
        return getattr(self, name)


@dataclass(frozen=True)
class JointGroups:
    """Joint names per group and the model's action layout; built with ``strict_config.from_dict`` from
    YAML/params (the layout comes from the checkpoint: ``with_layout``)."""

    left_arm: tuple[str, ...] = ()
    right_arm: tuple[str, ...] = ()
    claw: tuple[str, ...] = ()
    layout: ActionLayout = field(default_factory=ActionLayout)

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
            room = len(self.layout.group(group))
            require(
                len(names) <= room,
                f"JointGroups.{group}: {len(names)} joints listed, the model has {room} actions for it",
            )
        all_names = self.joint_names
        dups = sorted({n for n in all_names if all_names.count(n) > 1})
        require(not dups, f"JointGroups: duplicate joint names {dups}")
        require(bool(all_names), "JointGroups: no joints listed")

    def with_layout(self, layout: ActionLayout) -> JointGroups:
        """The same joints on another model's action layout (ConfigError when a group does not fit)."""
        return JointGroups(self.left_arm, self.right_arm, self.claw, layout)

    @property
    def action_dim(self) -> int:
        return self.layout.action_dim

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
        """Action indices of the listed joints, in state-vector order."""
        idx = [self.layout.group(g)[i] for g in GROUP_NAMES for i in range(len(getattr(self, g)))]
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
        """Model output [T, action_dim] (or [action_dim]) -> per-group arrays [T, n_joints] of the listed
        joints. Groups with no joints are left out."""
        arr = np.asarray(actions)
        single = arr.ndim == 1
        if single:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.action_dim:
            raise JointMappingError(f"actions must be [T, {self.action_dim}], got {list(np.shape(actions))}")
        out: dict[str, np.ndarray] = {}
        for g in self.active_groups:
            idx = list(self.layout.group(g)[: len(getattr(self, g))])
            part = arr[:, idx]
            out[g] = part[0] if single else part
        return out

    def split_joints(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Joint-space values [..., state_dim] (state-vector order) -> per-group [..., n_joints] of the
        active groups."""
        arr = np.asarray(values)
        if arr.shape[-1] != self.state_dim:
            raise JointMappingError(f"expected [..., {self.state_dim}] joint values, got {list(arr.shape)}")
        out: dict[str, np.ndarray] = {}
        start = 0
        for g in GROUP_NAMES:
            n = len(getattr(self, g))
            if n:
                out[g] = arr[..., start : start + n]
            start += n
        return out

    def select_actions(self, actions: np.ndarray) -> np.ndarray:
        """Model output [..., action_dim] -> [..., state_dim] in state-vector order."""
        return np.asarray(actions)[..., self.action_indices()]

    def expand_to_actions(self, values: np.ndarray, fill: np.ndarray | float = 0.0) -> np.ndarray:
        """Inverse of ``select_actions``: [..., state_dim] -> [..., action_dim] (unlisted dims from
        ``fill``)."""
        values = np.asarray(values)
        shape = (*values.shape[:-1], self.action_dim)
        out = np.broadcast_to(np.asarray(fill, dtype=values.dtype), shape).copy()
        out[..., self.action_indices()] = values
        return out
