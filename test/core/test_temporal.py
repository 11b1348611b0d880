"""Temporal-spatial pooling of projected frame tokens, checked against hand-computed means."""

import pytest
import torch

from nvila_core.model.temporal import TemporalPooler


def frames_2x2() -> torch.Tensor:
    """[4 frames, 4 tokens (2x2), 1 channel]: value = 10 * frame + token."""
    return torch.tensor([[[10 * f + s] for s in range(4)] for f in range(4)], dtype=torch.float32)


def test_identity_pooling():
    pooler = TemporalPooler([[1, 1, 1]])
    assert pooler.is_identity
    (out,) = pooler(frames_2x2())
    torch.testing.assert_close(out, frames_2x2())


def test_temporal_mean_of_frame_pairs():
    pooler = TemporalPooler([[2, 1, 1]])
    assert not pooler.is_identity
    (out,) = pooler(frames_2x2())
    expected = torch.tensor([[[5.0], [6.0], [7.0], [8.0]], [[25.0], [26.0], [27.0], [28.0]]])
    torch.testing.assert_close(out, expected)


def test_spatial_pooling():
    (full,) = TemporalPooler([[1, 2, 2]])(frames_2x2())
    torch.testing.assert_close(full, torch.tensor([[[1.5]], [[11.5]], [[21.5]], [[31.5]]]))
    (rows,) = TemporalPooler([[1, 2, 1]])(frames_2x2())  # mean of token rows: (0,2) and (1,3)
    torch.testing.assert_close(rows[0], torch.tensor([[1.0], [2.0]]))
    (cols,) = TemporalPooler([[1, 1, 2]])(frames_2x2())  # mean of token columns: (0,1) and (2,3)
    torch.testing.assert_close(cols[3], torch.tensor([[30.5], [32.5]]))


def test_several_streams_and_mixed_pooling():
    x = torch.randn(8, 16, 3)
    streams = TemporalPooler([[1, 1, 1], [4, 2, 2]])(x)
    assert [s.shape for s in streams] == [(8, 16, 3), (2, 4, 3)]
    grid = x.reshape(8, 4, 4, 3)
    expected = grid[4:8, 0:2, 2:4].mean(dim=(0, 1, 2))  # second time group, top-right window
    torch.testing.assert_close(streams[1][1, 1], expected)


def test_divisibility_errors():
    with pytest.raises(
        ValueError, match="3 frames are not divisible by the temporal pool window 2"
    ):
        TemporalPooler([[2, 1, 1]])(torch.zeros(3, 4, 1))
    with pytest.raises(ValueError, match="height pool window 3"):
        TemporalPooler([[1, 3, 1]])(torch.zeros(2, 16, 1))
    with pytest.raises(ValueError, match="square"):
        TemporalPooler([[1, 1, 1]])(torch.zeros(2, 6, 1))
    with pytest.raises(ValueError, match="pool_sizes"):
        TemporalPooler([[1, 1]])


def test_count_helpers():
    assert TemporalPooler([[8, 1, 1]]).output_frames(256) == 32
    assert TemporalPooler([[1, 1, 1], [4, 1, 1]]).output_frames(8) == 10
    assert TemporalPooler([[1, 1, 1], [1, 2, 2]]).tokens_per_frame(16) == [256, 64]
    with pytest.raises(ValueError):
        TemporalPooler([[3, 1, 1]]).output_frames(8)
