"""Tests for the rate-gated, bounded frame history, NaVILA's 8-frame sampler, and where a recent
history's sample holds the latest decisions."""

import numpy as np
import pytest

from nvila_nav.history import DecisionHistory, FrameHistory, latest_decision_slots

PERIOD_S = 0.5  # NaVILA's 2 Hz observation cadence


def navila_indices(n: int, num_frames: int = 8) -> list[int]:
    """NaVILA's history indices into n frames (history + current), current excluded."""
    return np.linspace(0, n - 1, num=num_frames - 1, endpoint=False, dtype=int).tolist()


def filled(n_kept: int, capacity: int = 64) -> FrameHistory:
    """A history whose frames are their own episode index, one offered every keep period."""
    history = FrameHistory(capacity=capacity)
    for index in range(n_kept):
        assert history.offer(index, index * PERIOD_S)
    return history


def test_rate_gating_keeps_one_frame_per_period_from_a_fast_camera():
    history = FrameHistory(keep_rate_hz=2.0)
    stamps = [k / 30 for k in range(61)]  # 30 Hz camera for 2 s
    kept = [stamp for stamp in stamps if history.offer(f"frame@{stamp:.3f}", stamp)]
    assert len(history) == 5
    assert kept == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])


def test_rate_gating_never_keeps_frames_closer_than_one_period():
    history = FrameHistory(keep_rate_hz=2.0)
    rng = np.random.default_rng(0)
    stamps = np.cumsum(rng.uniform(0.05, 0.2, size=200))  # irregular 5-20 Hz camera
    kept = [stamp for stamp in stamps if history.offer(stamp, stamp)]
    assert np.diff(kept).min() >= PERIOD_S - 1e-6
    assert np.diff(kept).max() < PERIOD_S + 0.2  # kept at the first frame that is due
    assert history.latest.stamp_s == stamps[-1]


def test_frame_exactly_one_period_later_is_kept_despite_float_rounding():
    history = FrameHistory(keep_rate_hz=3.0)
    assert history.offer("a", 100.0)
    assert not history.offer("b", 100.0 + 1 / 3 - 1e-3)
    assert history.offer("c", 100.0 + 0.1 + 0.1 + 0.1 + 1 / 30)


def test_latest_is_the_newest_offered_frame_even_when_not_kept():
    history = FrameHistory()
    history.offer("kept", 0.0)
    assert not history.offer("newer", 0.2)
    assert history.latest.frame == "newer"
    assert history.latest.key is None
    assert history.latest.stamp_s == 0.2
    assert history.keys == (0,)


def test_out_of_order_frame_is_ignored_and_current_stays_newest():
    history = FrameHistory()
    history.offer("t1", 1.0)
    assert not history.offer("t0", 0.0)
    assert history.latest.frame == "t1"
    assert len(history) == 1


def test_non_finite_stamp_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        FrameHistory().offer("x", float("nan"))


def test_keys_increase_and_stay_with_their_frame():
    history = filled(10)
    assert history.keys == tuple(range(10))
    frames, keys = history.sample()
    for frame, key in zip(frames, keys, strict=True):
        if key is not None:
            assert frame == key  # frame i was kept as the i-th frame, so its key is i


def test_thinning_bounds_memory_keeps_first_frame_and_spans_episode():
    capacity = 16
    history = filled(500, capacity=capacity)
    assert len(history) <= capacity
    keys = history.keys
    assert keys[0] == 0  # the first frame of the episode is never dropped
    assert keys[-1] == 499  # the newest kept frame is always there
    assert history.span_s == pytest.approx(499 * PERIOD_S)
    gaps = np.diff(keys)
    assert (gaps >= 1).all()
    assert gaps[-1] == 1  # recent half stays at full resolution
    assert np.all(np.diff(gaps) <= 0)  # resolution only gets coarser towards the past


def test_thinning_drops_every_other_frame_of_the_oldest_half():
    history = filled(9, capacity=8)
    assert history.keys == (0, 2, 4, 5, 6, 7, 8)


def test_keys_of_surviving_frames_never_change_under_thinning():
    history = FrameHistory(capacity=8)
    frame_of_key = {}
    for index in range(100):
        history.offer(f"f{index}", index * PERIOD_S)
        frame_of_key.setdefault(history.latest.key, history.latest.frame)
        frames, keys = history.sample()
        for frame, key in zip(frames, keys, strict=True):
            if key is not None:
                assert frame_of_key[key] == frame


@pytest.mark.parametrize("n", [1, 5])
def test_short_history_is_front_padded_then_current(n):
    history = filled(n)
    frames, keys = history.sample()
    padding = 8 - n
    assert frames == [None] * padding + list(range(n))
    assert keys == [None] * padding + list(range(n))


@pytest.mark.parametrize("n", [8, 9, 30, 200])
def test_sampler_matches_navila_indices_then_current(n):
    history = filled(n, capacity=256)
    frames, keys = history.sample()
    assert frames == [*navila_indices(n), n - 1]
    assert keys == frames


def test_explicit_navila_indices():
    assert navila_indices(8) == [0, 1, 2, 3, 4, 5, 6]
    assert navila_indices(9) == [0, 1, 2, 3, 4, 5, 6]
    assert navila_indices(30) == [0, 4, 8, 12, 16, 20, 24]
    assert navila_indices(200) == [0, 28, 56, 85, 113, 142, 170]


def test_after_thinning_the_nearest_surviving_frame_stands_in():
    history = filled(200)  # default capacity 64: thinned several times
    frames, _ = history.sample()
    kept = np.array(history.keys[:-1])
    assert frames[0] == 0 and frames[-1] == 199
    for target, chosen in zip(navila_indices(200), frames[:-1], strict=True):
        assert chosen in kept
        assert abs(chosen - target) == np.abs(kept - target).min()


def test_current_frame_not_kept_is_appended_after_the_whole_history():
    history = filled(7)  # kept frames 0..6 at 0.0..3.0 s
    assert not history.offer("now", 3.2)
    frames, keys = history.sample()
    assert frames == [0, 1, 2, 3, 4, 5, 6, "now"]  # n = 7 history + current = 8
    assert keys == [0, 1, 2, 3, 4, 5, 6, None]


def test_current_frame_that_was_kept_is_not_shown_twice():
    history = filled(7)
    frames, _ = history.sample()
    assert frames == [None, 0, 1, 2, 3, 4, 5, 6]  # 6 is current; history is 0..5


def test_sample_before_any_frame_raises():
    with pytest.raises(LookupError):
        FrameHistory().sample()


def test_reset_clears_the_episode_but_never_reuses_keys():
    history = filled(5)
    history.reset()
    assert len(history) == 0
    assert history.latest is None
    assert history.span_s == 0.0
    assert history.offer("new episode", 0.0)  # an earlier stamp is fine after reset
    frames, keys = history.sample()
    assert frames == [None] * 7 + ["new episode"]
    assert keys == [None] * 7 + [5]


def test_reset_episode_samples_relative_to_its_own_first_frame():
    history = filled(3)
    history.reset()
    for index in range(30):
        history.offer(index, index * PERIOD_S)
    frames, keys = history.sample()
    assert frames == [*navila_indices(30), 29]
    assert keys == [3 + index for index in frames]


def test_span_covers_first_kept_to_current_frame():
    history = filled(3)
    history.offer("current", 1.2)
    assert history.span_s == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"keep_rate_hz": 0.0}, "keep_rate_hz"),
        ({"keep_rate_hz": float("inf")}, "keep_rate_hz"),
        ({"num_frames": 1}, "num_frames"),
        ({"capacity": 4, "num_frames": 8}, "capacity"),
    ],
)
def test_invalid_configuration_is_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        FrameHistory(**kwargs)


@pytest.mark.parametrize("num_frames", [2, 3, 5])
def test_latest_decision_slots_find_the_latest_decisions_in_a_decision_history_sample(num_frames):
    """Recorded decisions are their own index; at every step the slots pick the latest decisions
    out of the sample, oldest first, the current last, the first decision standing for any
    before it."""
    history = DecisionHistory(num_frames)
    for current in range(9):
        frames, _ = history.sample(current, current)
        for count in range(1, num_frames):
            slots = latest_decision_slots(current + 1, num_frames, count)
            expected = [max(d, 0) for d in range(current - count + 1, current + 1)]
            assert [frames[slot] for slot in slots] == expected
        history.record(current, current)


def test_latest_decision_slots_refuse_what_the_sample_does_not_hold():
    with pytest.raises(ValueError, match="does not hold decision 2 of 6"):
        latest_decision_slots(6, 4, 4)  # the sample holds decisions 0, 3, 4 and 5
    with pytest.raises(ValueError, match="count >= 1"):
        latest_decision_slots(3, 4, 0)
