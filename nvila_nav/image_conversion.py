"""sensor_msgs/Image <-> numpy RGB without cv_bridge.

cv_bridge needs a compiled boost extension that is not pip-installable and breaks on NumPy 2, and
the model only ever wants H×W×3 uint8 RGB. The functions here duck-type the Image fields, so they
work on rclpy messages, rosbag records and plain test doubles alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class ImageConversionError(ValueError):
    """An image whose fields cannot describe a valid picture; the message names the field to fix."""


@dataclass(frozen=True)
class _PixelLayout:
    """How one encoding stores a pixel and which stored channels give R, G and B."""

    channels: int
    bytes_per_channel: int
    rgb_channels: tuple[int, int, int]


_LAYOUTS: dict[str, _PixelLayout] = {
    "rgb8": _PixelLayout(3, 1, (0, 1, 2)),
    "bgr8": _PixelLayout(3, 1, (2, 1, 0)),
    "rgba8": _PixelLayout(4, 1, (0, 1, 2)),
    "bgra8": _PixelLayout(4, 1, (2, 1, 0)),
    "mono8": _PixelLayout(1, 1, (0, 0, 0)),
    "mono16": _PixelLayout(1, 2, (0, 0, 0)),
    "16UC1": _PixelLayout(1, 2, (0, 0, 0)),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
PUBLISHABLE_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")

# ITU-R BT.601 luma, the weights OpenCV's RGB2GRAY uses, so mono8 output matches cv_bridge users.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def _byte_buffer(data: Any) -> np.ndarray:
    """A flat uint8 view of `data` (bytes, bytearray, array.array, memoryview) or a copy of a list."""
    if isinstance(data, (list, tuple)):
        # checked here: numpy < 2 (ROS 2 Humble's) wraps 300 to 44 where numpy 2 raises
        try:
            values = np.asarray(data, dtype=np.int64)
        except OverflowError as error:
            raise ImageConversionError("data list holds values outside 0..255") from error
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ImageConversionError("data list holds values outside 0..255")
        return values.astype(np.uint8)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise ImageConversionError(
            f"data must be bytes-like or a list of ints, got {type(data).__name__}"
        ) from error


def image_to_rgb(msg: Any) -> np.ndarray:
    """Convert a sensor_msgs/Image (or anything with its fields) to a new H×W×3 uint8 RGB array.

    Rows are read through `step`, so padded rows cost nothing: only the pixels are copied, once.
    mono8 is replicated to three channels; mono16/16UC1 keep their high byte (a fixed full-range
    scale, so brightness does not flicker from frame to frame the way per-frame min/max would).
    `data` must hold exactly step × height bytes, as the message definition requires; any other
    length means height, step or encoding disagree with the data, so the image is rejected.
    """
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image size must be positive, got {width}x{height} (w x h)")
    pixel_bytes = layout.channels * layout.bytes_per_channel
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width × bytes per pixel = {width} × {pixel_bytes} "
            f"= {row_bytes} for {encoding}"
        )
    buffer = _byte_buffer(msg.data)
    expected = step * height
    if buffer.size != expected:
        raise ImageConversionError(
            f"data holds {buffer.size} bytes, expected step × height = {step} × {height} "
            f"= {expected} bytes"
        )
    byte_order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(f"{byte_order}u{layout.bytes_per_channel}")
    pixels = np.ndarray(
        shape=(height, width, layout.channels),
        dtype=dtype,
        buffer=buffer,
        strides=(step, pixel_bytes, layout.bytes_per_channel),
    )
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    for rgb_channel, stored_channel in enumerate(layout.rgb_channels):
        channel = pixels[:, :, stored_channel]
        rgb[:, :, rgb_channel] = channel >> 8 if layout.bytes_per_channel == 2 else channel
    return rgb


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict[str, Any]:
    """sensor_msgs/Image fields for an H×W×3 uint8 RGB array, ready for `Image(**fields)`.

    Rows are packed (step = width × channels) and little-endian flagged, as publishers usually do.
    mono8 uses BT.601 luma, so a gray image replicated by `image_to_rgb` comes back unchanged.
    """
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3):
        raise ImageConversionError(
            f"rgb must be an H×W×3 uint8 array, got {type(rgb).__name__} "
            f"{getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}".rstrip()
        )
    height, width, channels = rgb.shape
    if channels != 3 or height == 0 or width == 0:
        raise ImageConversionError(f"rgb must be a non-empty H×W×3 array, got shape {rgb.shape}")
    if encoding == "rgb8":
        packed = np.ascontiguousarray(rgb)
    elif encoding == "bgr8":
        packed = np.ascontiguousarray(rgb[:, :, ::-1])
    elif encoding == "mono8":
        packed = np.rint(rgb @ _LUMA_WEIGHTS).astype(np.uint8)
    else:
        raise ImageConversionError(
            f"cannot publish encoding {encoding!r}; supported: {', '.join(PUBLISHABLE_ENCODINGS)}"
        )
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": packed.strides[0],
        "data": packed.tobytes(),
    }


def shrink_frame(rgb: np.ndarray, longest_side: int = 0, square: int = 0) -> np.ndarray:
    """A smaller copy of an H×W×3 uint8 frame for keeping in memory, or `rgb` itself when it is
    already small enough.

    square > 0: the frame becomes a square×square bicubic resize, the resize a model with that
    tile size makes of every frame itself (exactly that one up to 6x downscaling; beyond, a box
    reduction first keeps a 4K camera affordable).
    Otherwise, longest_side > 0: frames whose longer side exceeds it are resized (bicubic,
    aspect ratio kept) so that it equals `longest_side`.
    """
    from PIL import Image as PILImage

    height, width = rgb.shape[:2]
    if square > 0:
        if (height, width) == (square, square):
            return rgb
        size = (square, square)
    elif longest_side > 0 and max(height, width) > longest_side:
        scale = longest_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        return rgb
    # A frame many times the target size (a 4K camera) is first reduced by box averaging, so
    # the bicubic filter does not span dozens of source pixels per output pixel (10x faster).
    gap = _REDUCING_GAP if max(height / size[1], width / size[0]) >= _REDUCE_FIRST_ABOVE else None
    resized = PILImage.fromarray(rgb).resize(size, PILImage.Resampling.BICUBIC, reducing_gap=gap)
    return np.asarray(resized)


_REDUCE_FIRST_ABOVE = 6.0
"""Downscale factor from which `shrink_frame` box-reduces before the bicubic resize."""
_REDUCING_GAP = 3.0
