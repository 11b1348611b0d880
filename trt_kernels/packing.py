"""The INT4 weight layout the W4A16 kernels read, and conversion from/to ONNX block-DQ tensors.

Layout (W4A16, symmetric, zero-point free, the form TensorRT's INT4 DequantizeLinear accepts):

* ``qweight``: int8 ``[K, N // 2]``; byte ``(k, j)`` holds the signed 4-bit codes of ``W[k, 2j]``
  (low nibble) and ``W[k, 2j + 1]`` (high nibble), two's complement, codes in ``[-8, 7]``.
* ``scales``: float16 ``[K // GROUP_SIZE, N]``, one scale per block of ``GROUP_SIZE`` rows of K.
* ``W[k, n] = code(k, n) * scales[k // GROUP_SIZE, n]``; the layer computes ``Y = X @ W``.

This is byte for byte the raw data of an ONNX INT4 initializer of shape ``[K, N]`` (row-major,
two values per byte, first value in the low nibble), so packing an ONNX weight is a reshape, and a
kernel tile of N-neighbours is one contiguous run of bytes. int8 rather than uint8 because
TensorRT builds strongly typed networks with int8 constants but not uint8 ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP_SIZE = 128
"""Rows of K sharing one scale: the block size of the ONNX DequantizeLinear nodes (issue E)."""

INT4_MIN, INT4_MAX = -8, 7


@dataclass(frozen=True)
class PackedW4:
    """One W4A16 weight in the kernels' layout (see the module docstring)."""

    qweight: np.ndarray
    scales: np.ndarray
    group_size: int = GROUP_SIZE

    def __post_init__(self) -> None:
        k, half_n = self.qweight.shape
        if self.qweight.dtype != np.int8 or self.scales.dtype != np.float16:
            raise ValueError("qweight must be int8 and scales float16")
        if k % self.group_size or self.scales.shape != (k // self.group_size, 2 * half_n):
            raise ValueError(
                f"scales {self.scales.shape} do not match qweight {self.qweight.shape} "
                f"with blocks of {self.group_size} along K"
            )

    @property
    def k(self) -> int:
        return self.qweight.shape[0]

    @property
    def n(self) -> int:
        return 2 * self.qweight.shape[1]

    def codes(self) -> np.ndarray:
        """The signed codes as int8 ``[K, N]``."""
        return unpack_int4(self.qweight)

    def dequantize(self) -> np.ndarray:
        """``W`` as float32 ``[K, N]``: the exact values the kernels multiply with (fp16-representable)."""
        scales = np.repeat(self.scales.astype(np.float32), self.group_size, axis=0)
        return self.codes().astype(np.float32) * scales


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Pack int codes ``[K, N]`` in ``[-8, 7]`` into int8 ``[K, N // 2]`` (low nibble = even column)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] % 2:
        raise ValueError(f"codes must be [K, N] with N even, got {codes.shape}")
    if codes.min(initial=0) < INT4_MIN or codes.max(initial=0) > INT4_MAX:
        raise ValueError("INT4 codes must lie in [-8, 7]")
    nibbles = codes.astype(np.uint8) & 0xF
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).view(np.int8)


def unpack_int4(qweight: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_int4`: int8 ``[K, N // 2]`` to int8 codes ``[K, N]``."""
    raw = qweight.view(np.int8)
    low = (raw << 4).astype(np.int8) >> 4  # shift the low nibble up, then sign-extend it down
    high = raw >> 4
    codes = np.empty((raw.shape[0], 2 * raw.shape[1]), dtype=np.int8)
    codes[:, 0::2], codes[:, 1::2] = low, high
    return codes


def quantize(weight: np.ndarray, group_size: int = GROUP_SIZE) -> PackedW4:
    """Round-to-nearest symmetric INT4 of a float ``[K, N]`` weight (scale = block max|w| / 7).

    For tests and benchmarks: real checkpoints arrive already quantised (AWQ) as ONNX DQ tensors.
    """
    weight = np.asarray(weight, dtype=np.float32)
    k, n = weight.shape
    if k % group_size:
        raise ValueError(f"K={k} is not a multiple of the block size {group_size}")
    blocks = weight.reshape(k // group_size, group_size, n)
    scales = (np.abs(blocks).max(axis=1) / INT4_MAX).astype(np.float16)
    scales[scales == 0] = 1.0  # an all-zero block: any scale reproduces it
    codes = np.rint(blocks / scales.astype(np.float32)[:, None, :])
    codes = np.clip(codes, INT4_MIN, INT4_MAX).reshape(k, n)
    return PackedW4(pack_int4(codes), scales, group_size)


def from_onnx_dq(weight, scales, block_size: int) -> PackedW4:
    """Convert the initializers of ``DequantizeLinear(INT4 [K, N], fp16 [K / B, N], axis=0)``.

    ``weight`` and ``scales`` are ``onnx.TensorProto``; onnx is imported here only, so the kernels
    and the layout work without it.
    """
    from onnx import TensorProto, numpy_helper

    if weight.data_type != TensorProto.INT4 or scales.data_type != TensorProto.FLOAT16:
        raise ValueError("expected an INT4 weight with FLOAT16 scales")
    codes = numpy_helper.to_array(weight).astype(np.int8)
    if codes.ndim != 2:
        raise ValueError(f"expected a 2-D [K, N] weight, got shape {codes.shape}")
    return PackedW4(pack_int4(codes), numpy_helper.to_array(scales), block_size)


def to_onnx_int4(packed: PackedW4, name: str):
    """The inverse of :func:`from_onnx_dq` for the weight: an INT4 ``TensorProto`` ``[K, N]``.

    The scales need no conversion: they are the FLOAT16 initializer as they are.
    """
    import ml_dtypes
    from onnx import numpy_helper

    return numpy_helper.from_array(packed.codes().astype(ml_dtypes.int4), name)
