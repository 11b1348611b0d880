"""INT8 × INT8 GEMM in Triton's CPU interpreter: bit-exact against numpy's int32 matmul."""

import numpy as np
import pytest
import torch

from trt_kernels.w8a8 import int8_gemm, w8a8_linear


def _operands(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (n, k), dtype=np.int8)
    return a, b


@pytest.mark.parametrize(("m", "n", "k"), [(1, 64, 256), (4, 64, 256), (5, 70, 200)])
def test_int8_gemm_is_bit_exact(m, n, k):
    """Extremes included (-128 × -128 sums): the int32 accumulator must not saturate or wrap."""
    a, b = _operands(m, n, k)
    a[0, :] = -128
    b[0, :] = -128
    c = int8_gemm(torch.from_numpy(a), torch.from_numpy(b))
    assert c.dtype == torch.int32
    np.testing.assert_array_equal(c.numpy(), a.astype(np.int32) @ b.astype(np.int32).T)


def test_w8a8_linear_rounds_only_once_to_fp16():
    """Exact int32 sum, fp32 scaling (2 roundings of 2^-24), then one fp16 rounding (2^-11)."""
    a, b = _operands(4, 64, 256, seed=1)
    rng = np.random.default_rng(2)
    a_scale = rng.uniform(1e-3, 2e-2, 4).astype(np.float32)
    b_scale = rng.uniform(1e-3, 2e-2, 64).astype(np.float32)
    y = w8a8_linear(*(torch.from_numpy(v) for v in (a, a_scale, b, b_scale)))
    exact = (a.astype(np.float64) @ b.astype(np.float64).T) * a_scale[:, None] * b_scale[None, :]
    bound = (2.0**-11 + 3 * 2.0**-24) * np.abs(exact) + 2.0**-25  # + half the fp16 subnormal step
    assert y.dtype == torch.float16
    assert (np.abs(y.numpy().astype(np.float64) - exact) <= bound).all()


def test_mismatched_operands_are_refused():
    a, b = _operands(2, 64, 128)
    with pytest.raises(ValueError, match="int8"):
        int8_gemm(torch.from_numpy(a), torch.from_numpy(b[:, :64]))
