"""The INT4 layout: pack/unpack, RTN quantisation, and the round trip from ONNX block-DQ tensors."""

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trt_kernels import packing


def _codes(k=256, n=64, seed=0):
    return np.random.default_rng(seed).integers(-8, 8, (k, n), dtype=np.int8)


def test_pack_unpack_round_trip_covers_every_code():
    codes = _codes()
    codes[0, :16] = np.arange(-8, 8)
    packed = packing.pack_int4(codes)
    assert packed.dtype == np.int8 and packed.shape == (256, 32)
    np.testing.assert_array_equal(packing.unpack_int4(packed), codes)


def test_layout_is_onnx_int4_raw_data_byte_for_byte():
    """Even column in the low nibble, two's complement: an ONNX INT4 [K, N] initializer's bytes."""
    codes = _codes()
    onnx_weight = numpy_helper.from_array(codes.astype(ml_dtypes.int4), "w")
    assert packing.pack_int4(codes).tobytes() == onnx_weight.raw_data
    assert packing.pack_int4(np.array([[-8, 7]])).view(np.uint8)[0, 0] == 0x78


def test_out_of_range_codes_and_odd_n_are_refused():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        packing.pack_int4(np.array([[8, 0]]))
    with pytest.raises(ValueError, match="N even"):
        packing.pack_int4(np.zeros((2, 3)))


def test_quantize_is_within_half_a_step():
    w = np.random.default_rng(1).standard_normal((256, 64)).astype(np.float32)
    w[:128, 0] = 0.0  # an all-zero block keeps a usable scale
    packed = packing.quantize(w)
    step = np.repeat(packed.scales.astype(np.float32), 128, axis=0)
    assert (np.abs(packed.dequantize() - w) <= step / 2 + 1e-6).all()
    assert packed.codes().min() >= -8 and packed.codes().max() <= 7


def test_round_trip_from_onnx_block_dq_tensors():
    codes = _codes()
    scales = np.random.default_rng(2).uniform(1e-3, 1e-1, (2, 64)).astype(np.float16)
    weight = helper.make_tensor("w", TensorProto.INT4, codes.shape, codes.flatten().tolist())
    scale_tensor = numpy_helper.from_array(scales, "s")
    packed = packing.from_onnx_dq(weight, scale_tensor, 128)
    np.testing.assert_array_equal(packed.codes(), codes)
    np.testing.assert_array_equal(packed.scales, scales)
    back = packing.to_onnx_int4(packed, "w")
    assert back.data_type == TensorProto.INT4 and list(back.dims) == [256, 64]
    np.testing.assert_array_equal(numpy_helper.to_array(back).astype(np.int8), codes)


def test_from_onnx_refuses_what_the_kernels_cannot_run():
    int8_weight = numpy_helper.from_array(_codes(), "w")
    scales = numpy_helper.from_array(np.ones((2, 64), np.float16), "s")
    with pytest.raises(ValueError, match="INT4"):
        packing.from_onnx_dq(int8_weight, scales, 128)
    weight = numpy_helper.from_array(_codes().astype(ml_dtypes.int4), "w")
    with pytest.raises(ValueError, match="do not match"):
        packing.from_onnx_dq(weight, scales, 64)
