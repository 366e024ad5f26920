"""Latest-value buffer of the policy's inputs, with staleness, skew and instruction checks.

ROS-free: the node decodes messages (``image_codec``, ``joint_groups``) and pushes arrays with their
stamps (seconds on the node clock). ``snapshot(now)`` returns a ``vla_policy.observation.Observation``
when every input is present and fresh, or raises ``ObservationNotReady`` with the reason.

The observation stamp is the joint-state stamp: the chunk's first action refers to that state.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vla_policy.strict_config import require

if TYPE_CHECKING:
    from vla_policy.observation import Observation


class ObservationNotReady(RuntimeError):
    """The buffer cannot produce an observation now; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutOfOrderInput(ValueError):
    """A message older than the latest one of its source: it never replaces newer data."""


class InstructionRejected(ValueError):
    """An instruction was refused (empty, too long, not text); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ObservationBufferConfig:
    cameras: tuple[str, ...] = ("top",)
    max_image_age: float = 0.5  # seconds between an image's stamp and the snapshot time
    max_state_age: float = 0.2  # seconds between the joint state's stamp and the snapshot time
    max_camera_skew: float = 0.1  # seconds between the oldest and newest camera stamps
    max_future: float = 0.05  # stamps newer than now by more than this are refused (clock mismatch)
    max_instruction_length: int = 1000  # characters
    embodiment_id: int = 0
    history_frames: int = 1  # frames per camera (the model's history), the latest received ones

    def __post_init__(self) -> None:
        if isinstance(self.cameras, list):
            object.__setattr__(self, "cameras", tuple(self.cameras))
        require(len(self.cameras) > 0, "ObservationBufferConfig.cameras: at least one camera is needed")
        require(
            len(set(self.cameras)) == len(self.cameras),
            f"ObservationBufferConfig.cameras: duplicate names in {list(self.cameras)}",
        )
        for name in ("max_image_age", "max_state_age", "max_camera_skew", "max_future"):
            value = getattr(self, name)
            require(
                isinstance(value, int | float) and math.isfinite(value) and value > 0,
                f"ObservationBufferConfig.{name}: must be > 0, got {value!r}",
            )
        require(
            isinstance(self.history_frames, int) and self.history_frames >= 1,
            f"ObservationBufferConfig.history_frames: must be >= 1, got {self.history_frames!r}",
        )
        require(
            self.max_instruction_length > 0,
            f"ObservationBufferConfig.max_instruction_length: must be > 0, got {self.max_instruction_length}",
        )


def validate_instruction(text: object, max_length: int) -> str:
    """The stripped instruction, or ``InstructionRejected`` with the reason."""
    if not isinstance(text, str):
        raise InstructionRejected(f"instruction must be text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InstructionRejected("instruction is empty")
    if len(stripped) > max_length:
        raise InstructionRejected(
            f"instruction has {len(stripped)} characters, more than the limit of {max_length}"
        )
    if "\x00" in stripped:
        raise InstructionRejected("instruction contains a NUL character")
    if "\ufffd" in stripped:
        raise InstructionRejected("instruction is not valid UTF-8 (it holds U+FFFD replacement characters)")
    return stripped


@dataclass
class _Stamped:
    value: np.ndarray
    stamp: float


class _History:
    """The last ``size`` frames of one camera, oldest first; ``stamp`` is the newest frame's."""

    def __init__(self, size: int) -> None:
        self.frames: deque[np.ndarray] = deque(maxlen=size)
        self.stamp = -math.inf

    def push(self, image: np.ndarray, stamp: float) -> None:
        if self.frames and self.frames[-1].shape != image.shape:
            self.frames.clear()  # a resolution change restarts the history: frames must stack
        self.frames.append(image)
        self.stamp = stamp

    @property
    def full(self) -> bool:
        return len(self.frames) == self.frames.maxlen

    def value(self) -> np.ndarray:
        """[H, W, 3] with one frame, else [F, H, W, 3] oldest first."""
        return self.frames[-1] if self.frames.maxlen == 1 else np.stack(self.frames)


class ObservationBuffer:
    """Keeps the latest image per camera, the latest joint state and the active instruction.

    Thread-safe: subscriptions write while the inference worker takes snapshots.
    """

    def __init__(self, config: ObservationBufferConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._images: dict[str, _History] = {}
        self._state: _Stamped | None = None
        self._instruction: str | None = None
        self._instruction_error: str | None = None
        self._errors: dict[str, str] = {}

    # --- writers ---------------------------------------------------------------------------------
    def update_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        if camera not in self.config.cameras:
            raise KeyError(f"unknown camera '{camera}'; cameras: {', '.join(self.config.cameras)}")
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(
                f"camera '{camera}': expected uint8 [H, W, 3], got {img.dtype} {list(img.shape)}"
            )
        with self._lock:
            history = self._images.setdefault(camera, _History(self.config.history_frames))
            if stamp < history.stamp:
                raise OutOfOrderInput(
                    f"camera '{camera}': stamp {stamp:.3f} is {history.stamp - stamp:.3f} s older than the "
                    "latest image (out of order; dropped)"
                )
            history.push(img, float(stamp))
            self._errors.pop(camera, None)

    def update_state(self, state: np.ndarray, stamp: float) -> None:
        arr = np.asarray(state, dtype=np.float32).ravel()
        if not np.all(np.isfinite(arr)):
            raise ValueError("joint state has non-finite values")
        with self._lock:
            if self._state is not None and stamp < self._state.stamp:
                raise OutOfOrderInput(
                    f"joint state: stamp {stamp:.3f} is {self._state.stamp - stamp:.3f} s older than the "
                    "latest (out of order; dropped)"
                )
            self._state = _Stamped(arr, float(stamp))
            self._errors.pop("joint_states", None)

    def set_instruction(self, text: object) -> str:
        """Validate and store the instruction. A rejected one clears the active instruction.

        Returns the stored text; raises ``InstructionRejected``.
        """
        try:
            stripped = validate_instruction(text, self.config.max_instruction_length)
        except InstructionRejected as exc:
            with self._lock:
                self._instruction = None
                self._instruction_error = exc.reason
            raise
        with self._lock:
            self._instruction = stripped
            self._instruction_error = None
        return stripped

    def reject_instruction(self, reason: str) -> None:
        """An instruction that could not even be decoded: like a refused one, it clears the active one."""
        with self._lock:
            self._instruction = None
            self._instruction_error = reason

    def report_error(self, source: str, reason: str) -> None:
        """Record why the last message of ``source`` (camera name or 'joint_states') was dropped."""
        with self._lock:
            self._errors[source] = reason

    def clear(self) -> None:
        """Drop all inputs except the instruction (reset, cleanup, the clock jumping back)."""
        with self._lock:
            self._images.clear()
            self._state = None
            self._errors.clear()

    # --- readers ---------------------------------------------------------------------------------
    @property
    def instruction(self) -> str | None:
        return self._instruction

    @property
    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._errors)

    def latest_state(self) -> tuple[np.ndarray, float] | None:
        with self._lock:
            return None if self._state is None else (self._state.value.copy(), self._state.stamp)

    def ages(self, now: float) -> dict[str, float | None]:
        """Age in seconds of the latest message per source (None = never received)."""
        with self._lock:
            out: dict[str, float | None] = {
                cam: (now - self._images[cam].stamp) if cam in self._images else None
                for cam in self.config.cameras
            }
            out["joint_states"] = None if self._state is None else now - self._state.stamp
        return out

    def check(self, now: float) -> str | None:
        """The reason no snapshot can be taken now, or None when one can."""
        try:
            self._collect(now)
        except ObservationNotReady as exc:
            return exc.reason
        return None

    def _collect(self, now: float) -> tuple[dict[str, np.ndarray], np.ndarray, str, float]:
        cfg = self.config
        with self._lock:
            # copies taken under the lock: subscriptions keep pushing frames while we check
            received = {c: len(h.frames) for c, h in self._images.items()}
            images = {c: _Stamped(h.value(), h.stamp) for c, h in self._images.items() if h.full}
            state = self._state
            instruction = self._instruction
            instruction_error = self._instruction_error
            errors = dict(self._errors)
        reasons: list[str] = []
        for cam in cfg.cameras:
            if cam not in received:
                extra = f" (last error: {errors[cam]})" if cam in errors else ""
                reasons.append(f"no image from camera '{cam}'{extra}")
                continue
            if cam not in images:
                have = received[cam]
                reasons.append(f"camera '{cam}' has {have} of {cfg.history_frames} history frames")
                continue
            age = now - images[cam].stamp
            if age > cfg.max_image_age:
                extra = f" (last error: {errors[cam]})" if cam in errors else ""
                reasons.append(f"camera '{cam}' is stale: {age:.3f} s > {cfg.max_image_age:.3f} s{extra}")
            elif age < -cfg.max_future:
                reasons.append(f"camera '{cam}' stamp is {-age:.3f} s in the future")
        if state is None:
            extra = f" (last error: {errors['joint_states']})" if "joint_states" in errors else ""
            reasons.append(f"no joint state{extra}")
        else:
            age = now - state.stamp
            if age > cfg.max_state_age:
                extra = f" (last error: {errors['joint_states']})" if "joint_states" in errors else ""
                reasons.append(f"joint state is stale: {age:.3f} s > {cfg.max_state_age:.3f} s{extra}")
            elif age < -cfg.max_future:
                reasons.append(f"joint state stamp is {-age:.3f} s in the future")
        if not reasons and len(cfg.cameras) > 1:
            stamps = [images[c].stamp for c in cfg.cameras]
            skew = max(stamps) - min(stamps)
            if skew > cfg.max_camera_skew:
                reasons.append(f"camera skew {skew:.3f} s > {cfg.max_camera_skew:.3f} s")
        if instruction is None:
            reasons.append(
                f"no valid instruction ({instruction_error})" if instruction_error else "no instruction"
            )
        if reasons:
            raise ObservationNotReady("; ".join(reasons))
        assert state is not None and instruction is not None
        return {c: images[c].value for c in cfg.cameras}, state.value.copy(), instruction, state.stamp

    def snapshot(self, now: float) -> Observation:
        """A consistent observation of the latest inputs, or ``ObservationNotReady(reason)``."""
        images, state, instruction, stamp = self._collect(now)
        from vla_policy.observation import Observation

        return Observation(
            images=images,
            state=state,
            instruction=instruction,
            embodiment_id=self.config.embodiment_id,
            stamp=stamp,
        )
