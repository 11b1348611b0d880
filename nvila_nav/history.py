"""The navigator's bounded temporal frame history and NaVILA's 8-frame sampler.

NaVILA was trained on one observation every 0.5 s (one per 25 cm / 15° primitive) and, at each
step, shows the model 7 frames sampled uniformly over the whole episode plus the current frame.
`FrameHistory` keeps frames at that cadence, bounds memory on long episodes and reproduces the
sampler, handing out stable integer keys so the model can cache per-frame features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

FrameT = TypeVar("FrameT")

# Stamps are floats built from sec + nanosec; this absorbs their rounding so a frame exactly one
# keep period after the last kept one is not rejected for being a nanosecond short.
_STAMP_EPSILON_S = 1e-6


@dataclass(frozen=True, eq=False)
class StampedFrame(Generic[FrameT]):
    """A frame, its history key (None when the frame was not kept) and its stamp in seconds.

    Compared by identity: frames are usually numpy arrays, which have no single truth value.
    """

    frame: FrameT
    key: int | None
    stamp_s: float


class FrameHistory(Generic[FrameT]):
    """Frames kept at `keep_rate_hz`, at most `capacity` of them, sampled NaVILA-style.

    Keys: every kept frame gets the next integer key. Keys are never reused, not even after
    `reset()`, so a feature cache keyed by them can never serve a frame from an earlier episode.
    Within an episode, `key - first key` is the frame's index in the full-resolution history.

    Temporal compression: when a kept frame would make the history exceed `capacity`, every other
    frame of the oldest half is dropped (starting with the second, so the episode's first frame
    always survives). The history then still spans the whole episode, coarser in the past and at
    full resolution in the recent half, and memory stays bounded on arbitrarily long episodes.
    """

    def __init__(self, keep_rate_hz: float = 2.0, capacity: int = 64, num_frames: int = 8):
        if not (math.isfinite(keep_rate_hz) and keep_rate_hz > 0):
            raise ValueError(f"keep_rate_hz must be finite and > 0, got {keep_rate_hz}")
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (history + current), got {num_frames}")
        if capacity < num_frames:
            raise ValueError(f"capacity ({capacity}) must be >= num_frames ({num_frames})")
        self._keep_period_s = 1.0 / keep_rate_hz
        self._capacity = capacity
        self._num_frames = num_frames
        self._next_key = 0
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget all frames (keys keep counting up)."""
        self._kept: list[StampedFrame[FrameT]] = []
        self._latest: StampedFrame[FrameT] | None = None
        self._episode_first_key = self._next_key

    def offer(self, frame: FrameT, stamp_s: float) -> bool:
        """Make `frame` the current observation; keep it too if a keep period has passed.

        A frame stamped earlier than the current one arrived out of order and is ignored entirely,
        so the current observation is always the newest frame. After a clock jump backwards (a
        simulator reset) call `reset()`. Returns whether the frame was kept.
        """
        if not math.isfinite(stamp_s):
            raise ValueError(f"stamp_s must be finite, got {stamp_s}")
        if self._latest is not None and stamp_s < self._latest.stamp_s:
            return False
        due = (
            not self._kept
            or stamp_s - self._kept[-1].stamp_s >= self._keep_period_s - _STAMP_EPSILON_S
        )
        if not due:
            self._latest = StampedFrame(frame, None, stamp_s)
            return False
        self._latest = StampedFrame(frame, self._next_key, stamp_s)
        self._next_key += 1
        self._kept.append(self._latest)
        if len(self._kept) > self._capacity:
            oldest_half = len(self._kept) // 2
            self._kept[:oldest_half] = self._kept[:oldest_half:2]
        return True

    @property
    def latest(self) -> StampedFrame[FrameT] | None:
        """The newest offered frame (kept or not), or None before the first offer."""
        return self._latest

    @property
    def keys(self) -> tuple[int, ...]:
        """Keys of the kept frames, oldest first; cached features for any other key are stale."""
        return tuple(entry.key for entry in self._kept)

    @property
    def span_s(self) -> float:
        """Seconds from the first kept frame to the current one (0 before any frame)."""
        if not self._kept or self._latest is None:
            return 0.0
        return self._latest.stamp_s - self._kept[0].stamp_s

    def __len__(self) -> int:
        return len(self._kept)

    def sample(self) -> tuple[list[FrameT | None], list[int | None]]:
        """`num_frames` frames and their keys for the model: sampled history, then current.

        History = the kept frames, minus the current frame when it was kept (it is never shown
        twice). With n = full-resolution history length + 1 (the current frame):
        - n < num_frames: front padding, i.e. None frames and None keys (the caller substitutes
          black frames), then the whole history, then current;
        - otherwise: indices `linspace(0, n - 1, num_frames - 1, endpoint=False, dtype=int)`
          into the full-resolution history, then current. After temporal compression an index
          may name a dropped frame; the kept frame nearest in episode index (the earlier on a
          tie) stands in, which keeps the sample uniform in time as NaVILA's is.
        The current frame's key is None when it was not kept (nothing to cache it under).
        """
        current = self._latest
        if current is None:
            raise LookupError("no frame offered since the last reset")
        history = self._kept[:-1] if self._kept and self._kept[-1] is current else self._kept
        history_len = history[-1].key - self._episode_first_key + 1 if history else 0
        n = history_len + 1
        padding = max(self._num_frames - n, 0)
        if padding:
            chosen = history
        else:
            targets = np.linspace(0, n - 1, num=self._num_frames - 1, endpoint=False, dtype=int)
            episode_indices = np.array([entry.key - self._episode_first_key for entry in history])
            nearest = np.abs(episode_indices[None, :] - targets[:, None]).argmin(axis=1)
            chosen = [history[i] for i in nearest]
        return (
            [None] * padding + [entry.frame for entry in chosen] + [current.frame],
            [None] * padding + [entry.key for entry in chosen] + [current.key],
        )


class DecisionHistory(Generic[FrameT]):
    """The frames a "recent" history model is shown: the instruction's first decision view, the
    views of the latest decisions before this one, and the current view.

    The navigator records the frame each executed action was decided on; the sample has the same
    slots as training data (`nvila_core.model.prompting.sample_recent_indices`): slot 0 is always
    the first decision's view, the last slot the current one, the slots between hold the latest
    decisions after the first (None where the instruction is younger). Memory is bounded: only
    the first and the latest `num_frames - 2` decisions are kept.
    """

    def __init__(self, num_frames: int):
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (first + current), got {num_frames}")
        self._num_frames = num_frames
        self.reset()

    def reset(self) -> None:
        self._first: tuple[FrameT, int | None] | None = None
        self._latest: list[tuple[FrameT, int | None]] = []
        self._count = 0

    def __len__(self) -> int:
        """Decisions recorded since the last reset."""
        return self._count

    def record(self, frame: FrameT, key: int | None) -> None:
        """The frame (and its history key) an executed decision was made on."""
        if self._first is None:
            self._first = (frame, key)
        elif self._num_frames > 2:
            self._latest.append((frame, key))
            del self._latest[: -(self._num_frames - 2)]
        self._count += 1

    def sample(
        self, current: FrameT, current_key: int | None
    ) -> tuple[list[FrameT | None], list[int | None]]:
        """`num_frames` frames and keys: first decision view, latest decisions, current view."""
        first = self._first or (current, current_key)
        padding = [None] * (self._num_frames - 2 - len(self._latest))
        chosen = [first, *padding, *self._latest, (current, current_key)]
        return (
            [None if entry is None else entry[0] for entry in chosen],
            [None if entry is None else entry[1] for entry in chosen],
        )


def latest_decision_slots(decisions: int, num_frames: int, count: int) -> list[int]:
    """Where a `DecisionHistory` sample of `num_frames` holds the frames of the latest `count`
    decisions (oldest first, the current one last; the first decision's frame stands for those
    before it), `decisions` counting the current one: what a frame head that reads more than the
    current frame is given."""
    if count < 1 or decisions < 1:
        raise ValueError(f"need count >= 1 and decisions >= 1, got {count} and {decisions}")
    current = decisions - 1
    slots = []
    for decision in range(current - count + 1, current + 1):
        if decision == current:
            slots.append(num_frames - 1)
        elif decision <= 0:
            slots.append(0)
        elif decision >= current - (num_frames - 2):
            slots.append(num_frames - 1 - (current - decision))
        else:
            raise ValueError(
                f"a {num_frames}-frame history does not hold decision {decision} of {decisions}"
            )
    return slots
