"""W4A16 Triton kernels: INT4 weights dequantised in registers, FP16 activations, FP16 accumulation.

``Y[M, N] = X[M, K] @ W[K, N]`` with ``W`` in the layout of :mod:`trt_kernels.packing`. Both
kernels accumulate in FP16 by default, the trick behind the NVILA/TinyChat W4A16 kernel's 1.7×:
it halves accumulator registers and turns the dequant-multiply-add chain into packed ``f16x2``
arithmetic (GEMV) and ``mma.sync ... .f16.f16.f16.f16`` (GEMM). ``ACC_FP16=False`` gives the
FP32-accumulating reference variant that the benchmark compares against.

The scale is applied before the multiply (``W = code * scale``), not to the sum: LLM activations
have outliers in the thousands, and ``x * code`` summed over a block of 128 would overflow FP16.

All tensors are contiguous and row-major; K must be a multiple of the block size (128) and N even.
Kernel arguments are ordered tensor inputs, integer scalars, tensor outputs: the order the
TensorRT AOT plugin launcher passes them in.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from trt_kernels.packing import GROUP_SIZE

GEMM_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
"""Tiles for Orin (sm_87, 48 KiB of shared memory per block by default, 4 warps of mma.sync)."""

GEMV_CONFIG = {"BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
"""One token: a [64, 128] tile is 4 KiB of packed weight per step, 64 contiguous bytes per K row."""

FP16_UNIT_ROUNDOFF = 2.0**-11
FP32_UNIT_ROUNDOFF = 2.0**-24


def error_bound(abs_dot, k: int, acc_fp16: bool = True):
    """Per-element bound on ``|kernel(x, W) - x @ W|`` (W exact), from ``abs_dot = |x| @ |W|``.

    First-order rounding-error bound (Higham, *Accuracy and Stability of Numerical Algorithms*,
    §3.1): a term passes through at most ``d = K/16 + log2(64) + 1`` accumulator roundings (a chain
    of k=16 ``mma.sync`` steps for the GEMM, at most K/64 tile steps after a depth-6 reduction tree
    for the GEMV, and the final add), each of relative size ``u_acc``; three more FP16 roundings
    (``code * scale``, ``x * w``, the FP16 output) add ``3 u``. So
    ``|err| <= (d * u_acc + 3 u) * sum_k |x_k| |W_kn|``. Worst case, so it holds on any
    summation order (CPU interpreter or tensor cores); typical errors are ~sqrt(d) times smaller.
    """
    depth = k / 16 + math.log2(64) + 1
    u_acc = FP16_UNIT_ROUNDOFF if acc_fp16 else FP32_UNIT_ROUNDOFF
    return (depth * u_acc + 3 * FP16_UNIT_ROUNDOFF) * abs_dot


def choose_split_k(n: int, k: int, num_sms: int, max_split: int = 16) -> int:
    """Smallest power-of-two split giving at least two GEMV programs per SM (that K allows)."""
    block_k, tiles = GEMV_CONFIG["BLOCK_K"], triton.cdiv(n, GEMV_CONFIG["BLOCK_N"])
    split = 1
    while split < max_split and tiles * split < 2 * num_sms and k % (2 * split * block_k) == 0:
        split *= 2
    return split


@triton.jit
def _dequant_tile(
    w_ptr, s_ptr, k0, col0, N, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, GROUP: tl.constexpr
):
    """Load the packed weight of rows ``k0 + [0, BLOCK_K)`` and columns ``col0 + [0, BLOCK_N)`` as FP16.

    Each byte is loaded once (BLOCK_N / 2 contiguous bytes per row, so the loads vectorise) and
    split with shifts: the wanted nibble goes to bits 28..31 of an int32 and an arithmetic shift
    right by 28 sign-extends it; interleaving the low and high codes restores the column order.
    The tile lies in one scale block (BLOCK_K divides GROUP), so one scale row serves it.
    """
    offs_k = k0 + tl.arange(0, BLOCK_K)
    offs_byte = col0 // 2 + tl.arange(0, BLOCK_N // 2)
    packed = tl.load(
        w_ptr + offs_k[:, None] * (N // 2) + offs_byte[None, :],
        mask=offs_byte[None, :] < N // 2,
        other=0,
    ).to(tl.int32)
    codes = tl.interleave((packed << 28) >> 28, (packed << 24) >> 28)
    offs_n = col0 + tl.arange(0, BLOCK_N)
    scale = tl.load(s_ptr + (k0 // GROUP) * N + offs_n, mask=offs_n < N, other=0.0)
    return codes.to(tl.float16) * scale[None, :]


@triton.jit
def w4a16_gemm_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    M,
    N,
    K,
    y_ptr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
    ACC_FP16: tl.constexpr,
):
    """Tiled GEMM on tensor cores: grid ``(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))``."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc_dtype = tl.float16 if ACC_FP16 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(
            x_ptr + offs_m[:, None] * K + (k0 + offs_k)[None, :],
            mask=offs_m[:, None] < M,
            other=0.0,
        )
        w = _dequant_tile(w_ptr, s_ptr, k0, pid_n * BLOCK_N, N, BLOCK_K, BLOCK_N, GROUP)
        acc = tl.dot(x, w, acc, out_dtype=acc_dtype)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(tl.float16), mask=mask)


@triton.jit
def w4a16_gemv_kernel(
    x_ptr,
    w_ptr,
    s_ptr,
    M,
    N,
    K,
    p_ptr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP: tl.constexpr,
    ACC_FP16: tl.constexpr,
):
    """Split-K GEMV: grid ``(cdiv(N, BLOCK_N), SPLIT_K, M)``, one row of X per program.

    Decoding is memory-bound and N / BLOCK_N programs do not fill the GPU, so K is also cut into
    ``SPLIT_K = num_programs(1)`` slices. Each writes its partial sum to ``P[split, row, :]``;
    the caller (or a ReduceSum node after the TensorRT plugin) adds the slices. Partials instead of
    atomics: deterministic, and the output need not be zeroed before the launch.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    row = tl.program_id(2)
    split_len = tl.multiple_of(K // tl.num_programs(1), BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc_dtype = tl.float16 if ACC_FP16 else tl.float32
    acc = tl.zeros((BLOCK_N,), dtype=acc_dtype)
    for k0 in range(pid_k * split_len, (pid_k + 1) * split_len, BLOCK_K):
        x = tl.load(x_ptr + row * K + k0 + offs_k)
        w = _dequant_tile(w_ptr, s_ptr, k0, pid_n * BLOCK_N, N, BLOCK_K, BLOCK_N, GROUP)
        acc += tl.sum(x[:, None].to(acc_dtype) * w.to(acc_dtype), axis=0)
    out = p_ptr + (pid_k * M + row) * N + offs_n
    tl.store(out, acc.to(tl.float16), mask=offs_n < N)


def _check(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, block_k: int) -> None:
    k, half_n = qweight.shape
    if x.dtype != torch.float16 or x.shape[-1] != k:
        raise ValueError(f"x must be float16 [..., {k}], got {x.dtype} {tuple(x.shape)}")
    if qweight.dtype != torch.int8 or scales.dtype != torch.float16:
        raise ValueError("qweight must be int8 and scales float16")
    if k % GROUP_SIZE or scales.shape != (k // GROUP_SIZE, 2 * half_n):
        raise ValueError(f"scales {tuple(scales.shape)} do not fit qweight {tuple(qweight.shape)}")
    if GROUP_SIZE % block_k:
        raise ValueError(f"BLOCK_K={block_k} must divide the block size {GROUP_SIZE}")


def w4a16_gemm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    acc_fp16: bool = True,
    config: dict | None = None,
) -> torch.Tensor:
    """``x[..., K] @ W`` with the tensor-core kernel; returns float16 ``[..., N]``."""
    cfg = {**GEMM_CONFIG, **(config or {})}
    _check(x, qweight, scales, cfg["BLOCK_K"])
    k, n = qweight.shape[0], 2 * qweight.shape[1]
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=torch.float16, device=x.device)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
    w4a16_gemm_kernel[grid](
        x2, qweight, scales, m, n, k, y, GROUP=GROUP_SIZE, ACC_FP16=acc_fp16, **cfg
    )
    return y.reshape(*x.shape[:-1], n)


def gemv_partials(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    split_k: int,
    acc_fp16: bool = True,
    config: dict | None = None,
) -> torch.Tensor:
    """The split-K partial sums, float16 ``[split_k, rows, N]``: exactly the plugin's output."""
    cfg = {**GEMV_CONFIG, **(config or {})}
    _check(x, qweight, scales, cfg["BLOCK_K"])
    k, n = qweight.shape[0], 2 * qweight.shape[1]
    if k % (split_k * cfg["BLOCK_K"]):
        raise ValueError(
            f"K={k} is not a multiple of split_k * BLOCK_K = {split_k * cfg['BLOCK_K']}"
        )
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    partials = torch.empty((split_k, m, n), dtype=torch.float16, device=x.device)
    grid = (triton.cdiv(n, cfg["BLOCK_N"]), split_k, m)
    w4a16_gemv_kernel[grid](
        x2, qweight, scales, m, n, k, partials, GROUP=GROUP_SIZE, ACC_FP16=acc_fp16, **cfg
    )
    return partials


def w4a16_gemv(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    split_k: int = 4,
    acc_fp16: bool = True,
    config: dict | None = None,
) -> torch.Tensor:
    """``x[..., K] @ W`` for a few tokens (decode); returns float16 ``[..., N]``."""
    partials = gemv_partials(x, qweight, scales, split_k, acc_fp16, config)
    n = partials.shape[-1]
    return partials.sum(dim=0, dtype=torch.float32).to(torch.float16).reshape(*x.shape[:-1], n)
