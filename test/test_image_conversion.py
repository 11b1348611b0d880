"""Tests for sensor_msgs/Image <-> numpy conversion on hand-built messages."""

import array
from types import SimpleNamespace

import numpy as np
import pytest

from nvila_nav.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    image_to_rgb,
    rgb_to_image_fields,
)

HEIGHT, WIDTH = 5, 7
PADDING = 5


def reference_rgb(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A pattern where every pixel and channel differs, so swaps and offsets show up."""
    rows = np.arange(height)[:, None, None]
    cols = np.arange(width)[None, :, None]
    chans = np.arange(3)[None, None, :]
    return ((rows * 37 + cols * 11 + chans * 80) % 256).astype(np.uint8)


def make_message(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False):
    """An Image-like record with `padding` junk bytes after each row (step > width × bpp)."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(pixels, dtype=dtype).reshape(height, -1).view(np.uint8)
    junk = np.full((height, padding), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1).tobytes()
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1] + padding,
        data=data,
    )


def stored_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """How a camera would store `rgb` in `encoding`."""
    alpha = np.full((*rgb.shape[:2], 1), 200, dtype=np.uint8)
    return {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }[encoding]


@pytest.mark.parametrize("padding", [0, PADDING])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_color_encodings_decode_to_the_same_rgb_pixels(encoding, padding):
    rgb = reference_rgb()
    result = image_to_rgb(make_message(stored_pixels(rgb, encoding), encoding, padding))
    assert result.dtype == np.uint8
    assert result.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(result, rgb)


@pytest.mark.parametrize("padding", [0, PADDING])
def test_mono8_is_replicated_to_three_channels(padding):
    gray = reference_rgb()[:, :, 0]
    result = image_to_rgb(make_message(gray[:, :, None], "mono8", padding))
    np.testing.assert_array_equal(result, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16_bit_mono_keeps_the_high_byte(encoding, padding, bigendian):
    values = np.array([[0, 255, 256, 4095], [32768, 65280, 65535, 1000]], dtype=np.uint16)
    msg = make_message(values[:, :, None], encoding, padding, bigendian)
    result = image_to_rgb(msg)
    expected_gray = np.array([[0, 0, 1, 15], [128, 255, 255, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(result, np.repeat(expected_gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize(
    "as_data",
    [bytes, bytearray, lambda b: array.array("B", b), list, memoryview],
    ids=["bytes", "bytearray", "array", "list", "memoryview"],
)
def test_every_container_type_for_data_is_accepted(as_data):
    rgb = reference_rgb()
    msg = make_message(rgb, "rgb8", PADDING)
    msg.data = as_data(msg.data)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_result_is_an_independent_writable_copy():
    rgb = reference_rgb()
    msg = make_message(rgb, "rgb8")
    result = image_to_rgb(msg)
    result[0, 0] = 0
    assert result.flags.writeable and result.flags.c_contiguous
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_published_color_fields_round_trip(encoding):
    rgb = reference_rgb()
    fields = rgb_to_image_fields(rgb, encoding)
    assert fields["encoding"] == encoding
    assert (fields["height"], fields["width"], fields["step"]) == (HEIGHT, WIDTH, WIDTH * 3)
    assert fields["is_bigendian"] == 0
    assert isinstance(fields["data"], bytes) and len(fields["data"]) == HEIGHT * WIDTH * 3
    np.testing.assert_array_equal(image_to_rgb(SimpleNamespace(**fields)), rgb)


def test_bgr8_fields_store_blue_first():
    rgb = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert rgb_to_image_fields(rgb, "bgr8")["data"] == bytes([30, 20, 10])


def test_mono8_fields_use_luma_and_gray_round_trips_exactly():
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    fields = rgb_to_image_fields(primaries, "mono8")
    assert fields["step"] == 3
    assert fields["data"] == bytes([76, 150, 29])  # round(255 × 0.299 / 0.587 / 0.114)
    gray = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    decoded = image_to_rgb(SimpleNamespace(**rgb_to_image_fields(gray, "mono8")))
    np.testing.assert_array_equal(decoded, gray)


def test_real_sensor_msgs_image_converts_both_ways():
    image_type = pytest.importorskip("sensor_msgs.msg").Image
    rgb = reference_rgb()
    msg = image_type(**rgb_to_image_fields(rgb, "bgr8"))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_unknown_encoding_lists_the_supported_ones():
    msg = make_message(reference_rgb(), "yuv422")
    with pytest.raises(ImageConversionError, match="unsupported encoding 'yuv422'") as info:
        image_to_rgb(msg)
    for encoding in SUPPORTED_ENCODINGS:
        assert encoding in str(info.value)


def test_step_smaller_than_a_row_is_rejected():
    msg = make_message(reference_rgb(), "rgb8")
    msg.step = WIDTH * 3 - 1
    with pytest.raises(ImageConversionError, match=r"step 20 is smaller than .* = 21 for rgb8"):
        image_to_rgb(msg)


def test_short_data_reports_expected_and_actual_bytes():
    msg = make_message(reference_rgb(), "rgb8", PADDING)
    msg.data = msg.data[:-1]
    expected = (WIDTH * 3 + PADDING) * HEIGHT
    with pytest.raises(
        ImageConversionError, match=f"holds {expected - 1} bytes, expected .*{expected}"
    ):
        image_to_rgb(msg)


def test_data_longer_than_step_times_height_is_rejected():
    msg = make_message(reference_rgb(), "rgb8")
    msg.height = HEIGHT - 1  # a wrong height would otherwise silently crop the image
    with pytest.raises(ImageConversionError, match="expected step × height"):
        image_to_rgb(msg)


@pytest.mark.parametrize(("height", "width"), [(0, WIDTH), (HEIGHT, 0), (-1, WIDTH)])
def test_non_positive_size_is_rejected(height, width):
    msg = make_message(reference_rgb(), "rgb8")
    msg.height, msg.width = height, width
    with pytest.raises(ImageConversionError, match="size must be positive"):
        image_to_rgb(msg)


def test_data_of_wrong_type_or_range_is_rejected():
    msg = make_message(reference_rgb(1, 1), "rgb8")
    for values in ([1, 2, 300], [1, 2, -1], [1, 2, 2**70]):  # numpy 1.x would wrap the first two
        msg.data = values
        with pytest.raises(ImageConversionError, match=r"outside 0\.\.255"):
            image_to_rgb(msg)
    msg.data = [0, 128, 255]
    assert image_to_rgb(msg).tolist() == [[[0, 128, 255]]]
    msg.data = "abc"
    with pytest.raises(ImageConversionError, match="bytes-like"):
        image_to_rgb(msg)


def test_conversion_errors_are_value_errors():
    assert issubclass(ImageConversionError, ValueError)


@pytest.mark.parametrize(
    ("rgb", "encoding", "fragment"),
    [
        (reference_rgb(), "rgba8", "cannot publish encoding 'rgba8'"),
        (reference_rgb()[:, :, 0], "rgb8", "H×W×3 uint8"),
        (reference_rgb().astype(np.float32), "rgb8", "H×W×3 uint8"),
        (np.zeros((2, 2, 4), np.uint8), "rgb8", "got shape"),
        (np.zeros((0, 2, 3), np.uint8), "rgb8", "non-empty"),
    ],
)
def test_publishing_rejects_what_it_cannot_encode(rgb, encoding, fragment):
    with pytest.raises(ImageConversionError, match=fragment):
        rgb_to_image_fields(rgb, encoding)


def test_shrink_frame_bounds_memory_and_matches_the_models_own_resize():
    from PIL import Image as PILImage

    from nvila_nav.image_conversion import shrink_frame

    rng = np.random.default_rng(0)
    camera = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    tile = shrink_frame(camera, square=96)
    # the same pixels the model's processor makes of the raw frame (bicubic to the tile)
    expected = np.asarray(PILImage.fromarray(camera).resize((96, 96), PILImage.Resampling.BICUBIC))
    assert tile.shape == (96, 96, 3) and np.array_equal(tile, expected)
    assert shrink_frame(tile, square=96) is tile  # already a tile: kept as is
    big = rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    tile = shrink_frame(big, square=96)
    assert tile.shape == (96, 96, 3) and tile.nbytes < big.nbytes / 500
    exact = np.asarray(PILImage.fromarray(big).resize((96, 96), PILImage.Resampling.BICUBIC))
    assert np.abs(tile.astype(int) - exact).mean() < 8  # box-reduced first: close, not equal
    bounded = shrink_frame(big, longest_side=448)
    assert bounded.shape == (252, 448, 3)
    small = big[:100, :200]
    assert shrink_frame(small, longest_side=448) is small
