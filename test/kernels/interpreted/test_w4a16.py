"""W4A16 GEMM and split-K GEMV in Triton's CPU interpreter against numpy (dequantise, then matmul).

Tolerance: ``w4a16.error_bound``, the first-order rounding-error bound of FP16 accumulation (see its
docstring), per element; the FP32-accumulating variant must meet the same bound with FP32's unit
roundoff, which is tighter by ~d·u. Small shapes: the interpreter runs each program in numpy.
"""

import numpy as np
import pytest
import torch

from trt_kernels import packing
from trt_kernels.w4a16 import (
    choose_split_k,
    error_bound,
    gemv_partials,
    w4a16_gemm,
    w4a16_gemv,
)

K, N = 256, 64


@pytest.fixture(scope="module")
def weight() -> packing.PackedW4:
    rng = np.random.default_rng(0)
    return packing.quantize(rng.standard_normal((K, N)).astype(np.float32) * 0.05)


def _inputs(m: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (m, K)).astype(np.float16)


def _check(y: torch.Tensor, x: np.ndarray, weight: packing.PackedW4, acc_fp16: bool) -> None:
    w = weight.dequantize().astype(np.float64)
    x64 = x.astype(np.float64)
    exact = x64 @ w
    bound = error_bound(np.abs(x64) @ np.abs(w), K, acc_fp16)
    assert y.dtype == torch.float16 and y.shape == exact.shape
    err = np.abs(y.numpy().astype(np.float64) - exact)
    assert (err <= bound).all(), (
        f"max error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"
    )


def _tensors(weight):
    return torch.from_numpy(weight.qweight), torch.from_numpy(weight.scales)


@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("acc_fp16", [True, False])
def test_gemm_matches_numpy(weight, m, acc_fp16):
    x = _inputs(m)
    y = w4a16_gemm(torch.from_numpy(x), *_tensors(weight), acc_fp16=acc_fp16)
    _check(y, x, weight, acc_fp16)


@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("split_k", [1, 4])
def test_gemv_split_k_matches_numpy(weight, m, split_k):
    x = _inputs(m)
    y = w4a16_gemv(torch.from_numpy(x), *_tensors(weight), split_k=split_k)
    _check(y, x, weight, acc_fp16=True)


def test_gemv_partials_are_the_k_slices(weight):
    """Each partial is the product over its own quarter of K: what the plugin's ReduceSum adds."""
    x = _inputs(1)
    partials = gemv_partials(torch.from_numpy(x), *_tensors(weight), split_k=4)
    assert partials.shape == (4, 1, N)
    w = weight.dequantize().astype(np.float64)
    for i in range(4):
        rows = slice(i * K // 4, (i + 1) * K // 4)
        exact = x[:, rows].astype(np.float64) @ w[rows]
        bound = error_bound(np.abs(x[:, rows].astype(np.float64)) @ np.abs(w[rows]), K // 4)
        assert (np.abs(partials[i].numpy() - exact) <= bound).all()


def test_leading_dims_are_kept(weight):
    x = torch.from_numpy(_inputs(4)).reshape(2, 2, K)
    assert w4a16_gemm(x, *_tensors(weight)).shape == (2, 2, N)
    assert w4a16_gemv(x, *_tensors(weight), split_k=2).shape == (2, 2, N)


def test_bad_inputs_are_refused(weight):
    qweight, scales = _tensors(weight)
    x = torch.from_numpy(_inputs(1))
    with pytest.raises(ValueError, match="float16"):
        w4a16_gemm(x.float(), qweight, scales)
    with pytest.raises(ValueError, match="split_k"):
        w4a16_gemv(x, qweight, scales, split_k=8)  # 256 is not a multiple of 8 * 64
    with pytest.raises(ValueError, match="BLOCK_K"):
        w4a16_gemm(x, qweight, scales, config={"BLOCK_K": 96})


def test_split_k_fills_the_gpu_within_what_k_allows():
    assert choose_split_k(n=4096, k=4096, num_sms=16) == 1  # 32 tiles already: 2 per SM
    assert choose_split_k(n=1536, k=1536, num_sms=16) == 4  # 12 tiles -> 48 programs
    assert choose_split_k(n=128, k=128, num_sms=132) == 2  # K = 128 allows two 64-row slices
