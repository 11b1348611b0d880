"""Projector: spatial-to-channel ordering and padding, checkpoint layer layout, sizes of real models."""

import pytest
import torch
from torch import nn

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.projector import MultimodalProjector, SpaceToChannel, space_to_channel


def coordinate_grid(side: int) -> torch.Tensor:
    """[1, side*side, 2] tokens whose channels are (row + 1, col + 1), so padding shows as 0."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return torch.stack([rows + 1, cols + 1], dim=-1).reshape(1, side * side, 2).float()


def test_space_to_channel_2x2_order():
    out = space_to_channel(coordinate_grid(4), 2)
    expected = torch.tensor(
        [
            [1, 1, 1, 2, 2, 1, 2, 2],  # cell (0, 0): (a, b) = (0,0) (0,1) (1,0) (1,1)
            [1, 3, 1, 4, 2, 3, 2, 4],  # cell (0, 1)
            [3, 1, 3, 2, 4, 1, 4, 2],  # cell (1, 0)
            [3, 3, 3, 4, 4, 3, 4, 4],  # cell (1, 1)
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(out, expected[None])


def test_space_to_channel_3x3_pads_bottom_right_with_zeros():
    out = space_to_channel(coordinate_grid(4), 3)  # 4x4 -> padded 6x6 -> 2x2 cells of 9 patches
    z = [0, 0]
    expected = torch.tensor(
        [
            [1, 1, 1, 2, 1, 3, 2, 1, 2, 2, 2, 3, 3, 1, 3, 2, 3, 3],
            [1, 4, *z, *z, 2, 4, *z, *z, 3, 4, *z, *z],
            [4, 1, 4, 2, 4, 3, *z, *z, *z, *z, *z, *z],
            [4, 4, *z, *z, *z, *z, *z, *z, *z, *z],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(out, expected[None])


def test_space_to_channel_2x2_odd_grid():
    out = space_to_channel(coordinate_grid(3), 2)
    expected = torch.tensor(
        [
            [1, 1, 1, 2, 2, 1, 2, 2],
            [1, 3, 0, 0, 2, 3, 0, 0],
            [3, 1, 3, 2, 0, 0, 0, 0],
            [3, 3, 0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(out, expected[None])


@pytest.mark.parametrize(("side", "k"), [(5, 2), (6, 3), (7, 3), (27, 2)])
def test_space_to_channel_matches_loop_definition(side, k):
    x = torch.randn(2, side * side, 3)
    out = space_to_channel(x, k)
    out_side = -(-side // k)
    grid = x.reshape(2, side, side, 3)
    expected = torch.zeros(2, out_side * out_side, k * k * 3)
    for i in range(out_side):
        for j in range(out_side):
            for a in range(k):
                for b in range(k):
                    r, c = k * i + a, k * j + b
                    if r < side and c < side:
                        start = (a * k + b) * 3
                        expected[:, i * out_side + j, start : start + 3] = grid[:, r, c]
    torch.testing.assert_close(out, expected)


def test_space_to_channel_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        space_to_channel(torch.zeros(1, 15, 2), 2)


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def meta_projector(preset: str) -> MultimodalProjector:
    with torch.device("meta"):
        return MultimodalProjector.from_config(NVILAConfig.preset(preset))


def test_nvila_8b_projector_layout():
    projector = meta_projector("nvila-8b")
    assert shapes(projector) == {
        "layers.1.weight": (13824,),
        "layers.1.bias": (13824,),
        "layers.2.weight": (3584, 13824),
        "layers.2.bias": (3584,),
        "layers.4.weight": (3584, 3584),
        "layers.4.bias": (3584,),
    }
    layers = projector.layers
    assert isinstance(layers[0], SpaceToChannel) and layers[0].k == 2
    assert isinstance(layers[1], nn.LayerNorm) and layers[1].eps == 1e-5
    assert isinstance(layers[3], nn.GELU) and layers[3].approximate == "none"
    params = sum(p.numel() for p in projector.parameters())
    assert params == 62_425_088  # ~62.4 M, 125 MB in bf16 like the checkpoint file


def test_nvila_lite_8b_projector_layout():
    projector = meta_projector("nvila-lite-8b")
    assert shapes(projector) == {
        "layers.1.weight": (10368,),
        "layers.1.bias": (10368,),
        "layers.2.weight": (3456, 10368),
        "layers.2.bias": (3456,),
        "layers.4.weight": (3456,),
        "layers.4.bias": (3456,),
        "layers.5.weight": (3584, 3456),
        "layers.5.bias": (3584,),
        "layers.7.weight": (3584, 3584),
        "layers.7.bias": (3584,),
    }
    assert projector.layers[0].k == 3
    assert isinstance(projector.layers[6], nn.GELU)
    params = sum(p.numel() for p in projector.parameters())
    assert 60.5e6 < params < 61.5e6  # ~61 M, 122 MB in bf16


def test_navila_projector_layout():
    assert shapes(meta_projector("navila-8b"))["layers.2.weight"] == (4096, 4608)


def test_2x2_fix_is_the_same_stack():
    plain = MultimodalProjector("mlp_downsample", 8, 16)
    fixed = MultimodalProjector("mlp_downsample_2x2_fix", 8, 16)
    assert shapes(plain) == shapes(fixed)
    fixed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 9, 8)
    torch.testing.assert_close(plain(x), fixed(x))


def test_forward_token_counts():
    tiny = MultimodalProjector.from_config(NVILAConfig.preset("tiny"))
    assert tiny(torch.randn(2, 16, 96)).shape == (2, 4, 64)
    lite = MultimodalProjector("mlp_downsample_3x3_fix", 4, 8)
    assert lite(torch.randn(1, 32 * 32, 4)).shape == (1, 121, 8)
    navila = MultimodalProjector("mlp_downsample", 4, 8)
    assert navila(torch.randn(1, 27 * 27, 4)).shape == (1, 196, 8)


def test_unknown_projector_type():
    with pytest.raises(ValueError, match=r"'mlp2x_gelu'.*mlp_downsample_3x3_fix"):
        MultimodalProjector("mlp2x_gelu", 8, 16)


# ---------------------------------------------------------------- token order per lineage
def test_space_to_channel_column_major_transposes_the_cells_only():
    x = coordinate_grid(4)
    row, column = space_to_channel(x, 2), space_to_channel(x, 2, "column_major")
    # cells (0,0) (1,0) (0,1) (1,1): NaVILA's VILA-1.5 order; the channels of a cell are the same
    torch.testing.assert_close(column, row[:, [0, 2, 1, 3]])
    grid = torch.randn(2, 7 * 7, 3)
    for k in (2, 3):
        n = -(-7 // k)
        rows = space_to_channel(grid, k).reshape(2, n, n, -1)
        columns = space_to_channel(grid, k, "column_major").reshape(2, n, n, -1)
        torch.testing.assert_close(columns, rows.transpose(1, 2))


def test_unknown_token_order():
    with pytest.raises(ValueError, match="token order 'diagonal'"):
        space_to_channel(torch.zeros(1, 16, 2), 2, "diagonal")
    with pytest.raises(ValueError, match="token order"):
        MultimodalProjector("mlp_downsample", 8, 16, token_order="diagonal")


def test_projector_order_follows_the_lineage():
    """NVILA presets merge row-major, NaVILA (vila1.5) column-major; weights are the same."""
    assert meta_projector("nvila-8b").layers[0].order == "row_major"
    assert meta_projector("nvila-lite-8b").layers[0].order == "row_major"
    assert meta_projector("navila-8b").layers[0].order == "column_major"
    row = MultimodalProjector("mlp_downsample", 4, 8)
    column = MultimodalProjector("mlp_downsample", 4, 8, token_order="column_major")
    column.load_state_dict(row.state_dict())
    x = torch.randn(1, 27 * 27, 4)
    out_row, out_column = row(x), column(x)
    torch.testing.assert_close(
        out_column, out_row.reshape(1, 14, 14, 8).transpose(1, 2).reshape(1, 196, 8)
    )
    assert not torch.allclose(out_column, out_row)
