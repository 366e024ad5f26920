"""Execute action chunks at the control rate: time-aligned switching, blending, RTC requests, overruns.

ROS-free; all times are seconds on one clock (the node clock, sim time with bags).

Time model: action ``i`` of a chunk is meant for ``obs_stamp + i * dt``. A chunk covers
``[obs_stamp, obs_stamp + T * dt)``; after that it is exhausted. ``next_action(now)`` reads the chunk at
``now`` (linear interpolation between neighbouring actions by default), so the actions that lie in the
past when a chunk arrives (observation time + inference latency) are skipped by construction.

Blending modes:
- ``none``: a new chunk replaces the current one as soon as it is accepted.
- ``temporal_ensemble``: ACT-style. Every chunk still covering ``now`` contributes, with weight
  ``exp(-m * k)`` where ``k = 0`` is the oldest chunk.
- ``rtc``: real-time chunking. The switch is as in ``none``; ``rtc_guidance(obs_stamp, now)`` builds the
  ``RTCGuidance`` for the next inference: the previous chunk aligned to the new chunk's start, and the
  number of frozen steps from the (running, conservative) latency estimate and the control period.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vla_policy.strict_config import require

if TYPE_CHECKING:
    from vla_policy.model.flow_matching import RTCGuidance

BLENDING_MODES: tuple[str, ...] = ("none", "temporal_ensemble", "rtc")


@dataclass(frozen=True)
class ChunkSchedulerConfig:
    control_period: float = 0.02  # seconds between control ticks
    action_dt: float = 0.02  # default seconds between a chunk's actions (the checkpoint's dt)
    blending: str = "none"  # none | temporal_ensemble | rtc
    # Request a new chunk when fewer actions than this remain: < 1 is a fraction of the chunk length,
    # >= 1 a number of actions.
    refill_threshold: float = 0.5
    interpolate: bool = True  # linear interpolation between actions (else zero-order hold)
    ensemble_m: float = 0.01  # temporal_ensemble: weight exp(-m * k), k = 0 the oldest chunk
    max_ensemble_chunks: int = 8
    rtc_overlap_steps: int = 0  # guided steps after the frozen ones; 0 = all remaining overlap
    rtc_max_guidance_weight: float = 5.0
    latency_decay: float = 0.2  # latency estimate: rises at once, decays by this fraction per chunk
    initial_latency: float = 0.0  # latency estimate before the first measurement (seconds)

    def __post_init__(self) -> None:
        for name in ("control_period", "action_dt"):
            value = getattr(self, name)
            require(
                isinstance(value, int | float) and math.isfinite(value) and value > 0,
                f"ChunkSchedulerConfig.{name}: must be > 0 seconds, got {value!r}",
            )
        require(
            self.blending in BLENDING_MODES,
            f"ChunkSchedulerConfig.blending: '{self.blending}' is not one of {', '.join(BLENDING_MODES)}",
        )
        require(
            math.isfinite(self.refill_threshold) and self.refill_threshold > 0,
            f"ChunkSchedulerConfig.refill_threshold: must be > 0, got {self.refill_threshold!r}",
        )
        require(self.ensemble_m >= 0, f"ChunkSchedulerConfig.ensemble_m: must be >= 0, got {self.ensemble_m}")
        require(self.max_ensemble_chunks >= 1, "ChunkSchedulerConfig.max_ensemble_chunks: must be >= 1")
        require(self.rtc_overlap_steps >= 0, "ChunkSchedulerConfig.rtc_overlap_steps: must be >= 0")
        require(
            self.rtc_max_guidance_weight >= 0, "ChunkSchedulerConfig.rtc_max_guidance_weight: must be >= 0"
        )
        require(0 < self.latency_decay <= 1, "ChunkSchedulerConfig.latency_decay: must be in (0, 1]")
        require(self.initial_latency >= 0, "ChunkSchedulerConfig.initial_latency: must be >= 0")


@dataclass
class ScheduledChunk:
    chunk_id: int
    actions: np.ndarray  # float64 [T, 16]
    obs_stamp: float
    dt: float
    latency: float
    accepted_at: float
    overrun_counted: bool = False

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def end(self) -> float:
        """First time the chunk no longer covers."""
        return self.obs_stamp + self.horizon * self.dt

    def position(self, t: float) -> float:
        """Fractional action index at time ``t``."""
        return (t - self.obs_stamp) / self.dt

    def covers(self, t: float) -> bool:
        return t < self.end

    def value_at(self, t: float, interpolate: bool = True) -> np.ndarray:
        x = min(max(self.position(t), 0.0), self.horizon - 1.0)
        if not interpolate:
            return self.actions[math.floor(x + 1e-9)]
        i = math.floor(x)
        if i >= self.horizon - 1:
            return self.actions[-1]
        frac = x - i
        return (1.0 - frac) * self.actions[i] + frac * self.actions[i + 1]


@dataclass(frozen=True)
class ChunkSwitch:
    """Result of ``ChunkScheduler.accept``."""

    accepted: bool
    chunk_id: int
    skipped: int  # whole actions already in the past at acceptance
    reason: str = ""


class ChunkScheduler:
    """Holds the executing chunk(s); called from the control timer and the inference worker.

    Not thread-safe by itself: the node serialises calls (one lock, cheap calls).
    """

    def __init__(self, config: ChunkSchedulerConfig) -> None:
        self.config = config
        self._chunks: deque[ScheduledChunk] = deque(maxlen=config.max_ensemble_chunks)
        self._next_id = 1
        self._inflight_since: float | None = None
        self.latency_estimate = float(config.initial_latency)
        self.last_latency: float | None = None
        self.overruns = 0
        self.accepted = 0
        self.rejected = 0
        self.skipped_actions = 0
        self.last_frozen_steps = 0

    # --- chunk lifecycle -------------------------------------------------------------------------
    @property
    def current(self) -> ScheduledChunk | None:
        """The newest accepted chunk (the one that drives refills and trajectories)."""
        return self._chunks[-1] if self._chunks else None

    @property
    def inference_in_flight(self) -> bool:
        return self._inflight_since is not None

    def reset(self) -> None:
        """Drop every chunk (deactivate / reset); statistics and the latency estimate stay."""
        self._chunks.clear()
        self._inflight_since = None

    def refill_count(self, horizon: int) -> float:
        thr = self.config.refill_threshold
        return thr * horizon if thr < 1 else thr

    def remaining_steps(self, now: float) -> float:
        """Actions of the current chunk still ahead of ``now`` (0 when none)."""
        cur = self.current
        if cur is None:
            return 0.0
        return max(0.0, cur.horizon - cur.position(now))

    def needs_inference(self, now: float) -> bool:
        """True when a new chunk should be requested now (never while one is in flight)."""
        if self._inflight_since is not None:
            return False
        cur = self.current
        if cur is None:
            return True
        return self.remaining_steps(now) < self.refill_count(cur.horizon)

    def begin_inference(self, now: float) -> None:
        """Mark an inference as started; ``needs_inference`` is False until accept/cancel."""
        self._inflight_since = now

    def cancel_inference(self) -> None:
        """The in-flight inference failed or was dropped."""
        self._inflight_since = None

    def accept(
        self,
        chunk_actions: np.ndarray,
        obs_stamp: float,
        latency: float,
        now: float,
        dt: float | None = None,
    ) -> ChunkSwitch:
        """Take a new chunk [T, 16] computed from the observation at ``obs_stamp``.

        ``latency`` (seconds) updates the running estimate. A chunk entirely in the past, or with
        non-finite values, is rejected (and counted).
        """
        self._inflight_since = None
        dt = float(self.config.action_dt if dt is None else dt)
        actions = np.asarray(chunk_actions, dtype=np.float64)
        if latency is not None and math.isfinite(latency) and latency >= 0:
            self._update_latency(float(latency))
        if actions.ndim != 2 or actions.shape[0] == 0:
            self.rejected += 1
            return ChunkSwitch(False, 0, 0, f"chunk must be [T, D], got {list(actions.shape)}")
        if not np.all(np.isfinite(actions)):
            self.rejected += 1
            return ChunkSwitch(False, 0, 0, "chunk has non-finite actions")
        if not (math.isfinite(dt) and dt > 0):
            self.rejected += 1
            return ChunkSwitch(False, 0, 0, f"chunk dt must be > 0, got {dt}")
        chunk = ScheduledChunk(self._next_id, actions, float(obs_stamp), dt, float(latency), now)
        if not chunk.covers(now):
            # inference slower than a whole chunk: also an overrun
            self.rejected += 1
            self.overruns += 1
            self._next_id += 1
            return ChunkSwitch(
                False,
                chunk.chunk_id,
                chunk.horizon,
                f"chunk is entirely in the past ({now - obs_stamp:.3f} s after its observation, "
                f"covers {chunk.horizon * dt:.3f} s)",
            )
        self._next_id += 1
        skipped = max(0, math.floor(chunk.position(now)))
        if self.config.blending != "temporal_ensemble":
            self._chunks.clear()
        self._chunks.append(chunk)
        self.accepted += 1
        self.skipped_actions += skipped
        return ChunkSwitch(True, chunk.chunk_id, skipped)

    def _update_latency(self, latency: float) -> None:
        self.last_latency = latency
        if latency >= self.latency_estimate:
            self.latency_estimate = latency
        else:
            a = self.config.latency_decay
            self.latency_estimate = (1 - a) * self.latency_estimate + a * latency

    # --- control tick ----------------------------------------------------------------------------
    def next_action(self, now: float) -> np.ndarray | None:
        """The action to command at ``now`` ([D] float64), or None when nothing covers ``now`` (hold).

        A chunk that runs out before a newer one arrived counts one overrun.
        """
        cur = self.current
        if cur is None:
            return None
        if not cur.covers(now):
            if not cur.overrun_counted:
                cur.overrun_counted = True
                self.overruns += 1
            return None
        return self._blended(cur, now, self.config.interpolate)

    def _blended(self, cur: ScheduledChunk, t: float, interpolate: bool) -> np.ndarray:
        """The action at ``t``: the current chunk's, or with temporal_ensemble the weighted mean of every
        chunk covering ``t`` (the same in forward and trajectory output)."""
        if self.config.blending != "temporal_ensemble":
            return cur.value_at(t, interpolate).copy()
        live = [c for c in self._chunks if c.covers(t)]
        weights = np.exp(-self.config.ensemble_m * np.arange(len(live), dtype=np.float64))
        values = np.stack([c.value_at(t, interpolate) for c in live])
        return (weights[:, None] * values).sum(axis=0) / weights.sum()

    def remaining(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """The current chunk's actions still ahead of ``now`` and their offsets from ``now`` (s).

        For trajectory output: ``(actions [n, D], time_from_start [n])``; empty when nothing is left.
        """
        cur = self.current
        if cur is None or not cur.covers(now):
            return np.zeros((0, 0)), np.zeros(0)
        first = max(0, math.floor(cur.position(now)) + 1)
        idx = np.arange(first, cur.horizon)
        times = cur.obs_stamp + idx * cur.dt - now
        if self.config.blending != "temporal_ensemble" or idx.size == 0:
            return cur.actions[idx].copy(), times
        return np.stack([self._blended(cur, now + t, interpolate=True) for t in times]), times

    # --- RTC -------------------------------------------------------------------------------------
    def rtc_plan(self, obs_stamp: float, now: float, horizon: int, dt: float | None = None) -> dict[str, Any]:
        """The pieces of an RTC request for a chunk observed at ``obs_stamp``, requested at ``now``.

        ``previous`` [horizon, D] is the current chunk at ``obs_stamp + i * dt`` (its last action past its
        end; ``covered`` rows lie within it); ``frozen_steps`` covers the time until the new chunk can
        take over (elapsed + latency estimate + one control period); ``overlap_steps`` the rest of the
        previous chunk's coverage.
        Returns {} when there is no previous chunk to guide toward.
        """
        cur = self.current
        if cur is None:
            return {}
        dt = float(self.config.action_dt if dt is None else dt)
        times = obs_stamp + np.arange(horizon) * dt
        previous = np.stack([cur.value_at(t, self.config.interpolate) for t in times])
        covered = int(np.count_nonzero(times < cur.end))
        delay = max(0.0, now - obs_stamp) + self.latency_estimate + self.config.control_period
        frozen = min(math.ceil(delay / dt - 1e-9), covered, horizon)
        overlap = max(0, covered - frozen)
        if self.config.rtc_overlap_steps > 0:
            overlap = min(overlap, self.config.rtc_overlap_steps)
        self.last_frozen_steps = frozen
        return {"previous": previous, "frozen_steps": frozen, "overlap_steps": overlap, "covered": covered}

    def rtc_guidance(
        self, obs_stamp: float, now: float, horizon: int, dt: float | None = None
    ) -> RTCGuidance | None:
        """``RTCGuidance`` for the next inference, or None (no previous chunk, or blending != rtc)."""
        if self.config.blending != "rtc":
            return None
        plan = self.rtc_plan(obs_stamp, now, horizon, dt)
        if not plan or plan["covered"] == 0:
            return None
        from vla_policy.model.flow_matching import RTCGuidance

        # Rows past the previous chunk's end are left out: they are free for the sampler.
        return RTCGuidance(
            previous=plan["previous"][: plan["covered"]].astype(np.float32),
            frozen_steps=plan["frozen_steps"],
            overlap_steps=plan["overlap_steps"],
            max_guidance_weight=self.config.rtc_max_guidance_weight,
        )

    def stats(self) -> dict[str, float]:
        return {
            "chunks_accepted": float(self.accepted),
            "chunks_rejected": float(self.rejected),
            "overruns": float(self.overruns),
            "skipped_actions": float(self.skipped_actions),
            "latency_estimate": float(self.latency_estimate),
            "last_frozen_steps": float(self.last_frozen_steps),
        }
