"""The sliding time window: posed frames in, bounded multi-view windows out.

Both shells feed it the same way: one `add_step()` per synchronized group of camera frames (the
live node's ApproximateTimeSynchronizer callback; the replay's stamp grouping). It never blocks and
never raises on bad timing: late frames, gaps and backwards jumps are counted and handled.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

__all__ = ["Frame", "Window", "WindowConfig", "WindowBuffer", "ViewSelection"]

log = logging.getLogger(__name__)

ViewSelection = Literal["round_robin", "all", "latest"]
NS = 1_000_000_000


@dataclass(frozen=True)
class Frame:
    """One posed camera image.

    Attributes:
        camera: camera name (stable across time).
        stamp_ns: acquisition time, ROS nanoseconds.
        image: HxWx3 uint8 RGB.
        K: 3x3 float64 intrinsics for `image` (OpenCV, pixel centres at +0.5).
        cam_to_world: 4x4 float64 optical frame -> fixed frame at `stamp_ns`.
    """

    camera: str
    stamp_ns: int
    image: np.ndarray
    K: np.ndarray
    cam_to_world: np.ndarray


@dataclass(frozen=True)
class Window:
    """The frames chosen for one reconstruction, oldest first; times are seconds relative to the end."""

    frames: tuple[Frame, ...]
    end_ns: int
    start_ns: int

    @property
    def times(self) -> np.ndarray:
        """[V] float64 seconds relative to the window end (<= 0)."""
        return np.array([(f.stamp_ns - self.end_ns) / NS for f in self.frames], dtype=np.float64)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(f.camera for f in self.frames)


@dataclass(frozen=True)
class WindowConfig:
    """How the window slides.

    Attributes:
        duration_s: keep steps whose stamp is within this many seconds of the newest (None: no limit).
        max_steps: keep at most this many time steps (None: no limit). At least one limit is needed.
        update_period_s: emit a window when the newest stamp advanced this much since the last one
            (0: on every step).
        max_views: upper bound on frames per window (the model's budget, SPEC §5).
        selection: 'round_robin' cycles cameras over time steps (the paper's alternating protocol),
            'all' takes every camera of every step, 'latest' fills the budget from the newest step back.
        jump_back_s: a step older than the newest by more than this is a backwards time jump (a looping
            bag or a restarted clock): the window resets. Must be >= duration_s, so that a frame that is
            merely late is dropped as late rather than taken for a jump. A clock that steps back by
            less than this also resets the window once it is clearly a clock and not stragglers:
            on the second step in a row before the window's start (one straggling group is late, two
            in a row are a clock that went back), or on the third step in a row before the newest
            stamp, with rising stamps, that is not a lagging camera's part of a buffered group (a
            clock running forward in the past: a bag shorter than the window looping, whose
            repeated stamps would otherwise all be duplicates).
        min_steps: do not emit before this many time steps are buffered.
    """

    duration_s: float | None = 2.0
    max_steps: int | None = None
    update_period_s: float = 0.5
    max_views: int = 12
    selection: ViewSelection = "round_robin"
    jump_back_s: float = 5.0
    min_steps: int = 2

    def __post_init__(self) -> None:
        if self.duration_s is None and self.max_steps is None:
            raise ValueError("set duration_s, max_steps or both; an unbounded window grows forever")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if self.duration_s is not None and self.jump_back_s < self.duration_s:
            raise ValueError(f"jump_back_s ({self.jump_back_s}) must be >= duration_s ({self.duration_s})")
        if self.max_views < 1:
            raise ValueError(f"max_views must be >= 1, got {self.max_views}")
        if self.selection not in ("round_robin", "all", "latest"):
            raise ValueError(f"unknown view selection {self.selection!r}")


@dataclass
class _Step:
    stamp_ns: int
    index: int  # global step counter: keeps round-robin phase stable as the window slides
    frames: dict[str, Frame] = field(default_factory=dict)


class WindowBuffer:
    """Sliding window of time steps; `add_step()` returns a Window when one is due.

    Counters (`counters`): steps, frames, late_dropped, duplicate_dropped, out_of_order (steps inserted
    before the newest), time_jump_resets, windows.
    """

    def __init__(self, config: WindowConfig, camera_order: Sequence[str] | None = None) -> None:
        self.config = config
        self._camera_order: list[str] = list(camera_order or [])
        self._steps: list[_Step] = []
        self._next_index = 0
        self._last_emit_ns: int | None = None
        self._behind_streak = 0  # consecutive steps older than the window's start
        self._not_newer: list[int] = []  # the last two of consecutive replayed-looking steps' stamps
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ input
    def add_step(self, frames: Sequence[Frame]) -> Window | None:
        """Add one synchronized group (frames of one or more cameras at about one stamp).

        The group's stamp is the newest of its frames. Returns the window to reconstruct now, or None.
        """
        if not frames:
            return None
        stamp = max(f.stamp_ns for f in frames)
        newest = self._steps[-1].stamp_ns if self._steps else None
        back = newest is not None and (newest - stamp > self.config.jump_back_s * NS or (
            stamp < self._oldest_allowed(newest) and self._behind_streak >= 1) or (
            self._looks_replayed(stamp, newest, frames) and self._clock_runs_in_the_past(stamp)))
        if back:
            log.warning("time jumped back by %.3f s: resetting the window", (newest - stamp) / NS)
            self.reset()
            self.counters["time_jump_resets"] += 1
            newest = None
        if newest is not None and self._looks_replayed(stamp, newest, frames):
            self._not_newer = self._not_newer[-1:] + [stamp]
        else:
            self._not_newer.clear()
        if newest is not None and stamp < self._oldest_allowed(newest):
            self.counters["late_dropped"] += len(frames)
            self._behind_streak += 1
            return None
        self._behind_streak = 0
        for f in frames:
            if f.camera not in self._camera_order:
                self._camera_order.append(f.camera)
        step = self._insert(stamp, frames)
        if step is None:
            return None
        self.counters["steps"] += 1
        self.counters["frames"] += len(frames)
        self._evict()
        return self._maybe_emit()

    def reset(self) -> None:
        self._steps.clear()
        self._last_emit_ns = None
        self._behind_streak = 0
        self._not_newer.clear()

    def _looks_replayed(self, stamp: int, newest: int, frames: Sequence[Frame]) -> bool:
        """Older than the newest step and not the late part of a buffered group (a lagging camera
        merging its frames into steps already seen is normal, not a clock going back)."""
        if stamp >= newest:
            return False
        existing = next((s for s in self._steps if s.stamp_ns == stamp), None)
        return existing is None or all(f.camera in existing.frames for f in frames)

    def _clock_runs_in_the_past(self, stamp: int) -> bool:
        """Two steps in a row before the newest, and this third one, with rising stamps."""
        last = self._not_newer[-2:]
        return len(last) == 2 and last[0] < last[1] < stamp

    # ------------------------------------------------------------------ internals
    def _oldest_allowed(self, newest_ns: int) -> int:
        if self.config.duration_s is None:
            return -(2**62)
        return newest_ns - int(round(self.config.duration_s * NS))

    def _insert(self, stamp: int, frames: Sequence[Frame]) -> _Step | None:
        stamps = [s.stamp_ns for s in self._steps]
        pos = bisect.bisect_left(stamps, stamp)
        if pos < len(self._steps) and self._steps[pos].stamp_ns == stamp:
            step = self._steps[pos]  # a late part of a group already seen: merge, first frame wins
            fresh = [f for f in frames if f.camera not in step.frames]
            self.counters["duplicate_dropped"] += len(frames) - len(fresh)
            if not fresh:
                return None
            step.frames.update({f.camera: f for f in fresh})
            return step
        if pos < len(self._steps):
            self.counters["out_of_order"] += 1
        step = _Step(stamp, self._next_index, {})
        self._next_index += 1
        for f in frames:
            if f.camera in step.frames:
                self.counters["duplicate_dropped"] += 1
            else:
                step.frames[f.camera] = f
        self._steps.insert(pos, step)
        return step

    def _evict(self) -> None:
        newest = self._steps[-1].stamp_ns
        oldest = self._oldest_allowed(newest)
        while self._steps and self._steps[0].stamp_ns < oldest:
            self._steps.pop(0)
        if self.config.max_steps is not None:
            del self._steps[: max(0, len(self._steps) - self.config.max_steps)]

    def _maybe_emit(self) -> Window | None:
        if len(self._steps) < self.config.min_steps:
            return None
        newest = self._steps[-1].stamp_ns
        if self._last_emit_ns is not None and newest - self._last_emit_ns < self.config.update_period_s * NS:
            return None
        window = self.current_window()
        self._last_emit_ns = newest
        self.counters["windows"] += 1
        return window

    def current_window(self) -> Window:
        """Select at most max_views frames from the buffered steps, oldest first."""
        if not self._steps:
            raise RuntimeError("the window is empty")
        selected = self._select()
        selected.sort(key=lambda f: (f.stamp_ns, self._camera_order.index(f.camera)))
        return Window(tuple(selected), end_ns=self._steps[-1].stamp_ns, start_ns=self._steps[0].stamp_ns)

    def _select(self) -> list[Frame]:
        cfg = self.config
        order = self._camera_order
        if cfg.selection == "latest":
            out: list[Frame] = []
            for step in reversed(self._steps):
                for cam in order:
                    if cam in step.frames and len(out) < cfg.max_views:
                        out.append(step.frames[cam])
            return out
        if cfg.selection == "all":
            steps = _spread(self._steps, max(1, cfg.max_views // max(1, len(order))))
            out = [s.frames[c] for s in steps for c in order if c in s.frames]
            return out[-cfg.max_views:]
        # round_robin: one camera per step, cycling with the global step index; a missing camera
        # (stopped publishing) hands its turn to the next one present at that step.
        steps = _spread(self._steps, cfg.max_views)
        out = []
        for s in steps:
            for k in range(len(order)):
                cam = order[(s.index + k) % len(order)]
                if cam in s.frames:
                    out.append(s.frames[cam])
                    break
        return out


def _spread(steps: list[_Step], count: int) -> list[_Step]:
    """At most `count` steps spread evenly over the window, always keeping the newest."""
    if len(steps) <= count:
        return list(steps)
    picks = np.linspace(len(steps) - 1, 0, count).round().astype(int)
    return [steps[i] for i in sorted(set(picks.tolist()))]
