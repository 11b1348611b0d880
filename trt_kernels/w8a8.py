"""W8A8 Triton kernel: INT8 × INT8 → INT32 on tensor cores, with an optional FP16 dequant epilogue.

``C[M, N] = A[M, K] @ B[N, K]^T``. B is kept in ``nn.Linear`` layout (one row per output channel,
K contiguous), so both operands are K-major: the layout int8 ``mma.sync.m16n8k32`` reads directly,
whereas a K×N int8 operand would need a transpose in shared memory (``ldmatrix.trans`` has no
8-bit form). The scaled variant is the TinyChat/QServe W8A8 linear (nvila.md §6.2): per-token
dynamic activation scales times per-output-channel weight scales, FP16 out.

The INT32 accumulation is exact while ``K * 127 * 128 < 2**31``, i.e. for K below 132 000.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

INT8_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
"""int8 mma needs BLOCK_K >= 32; 64×64×64 fits Orin's shared memory at 3 stages."""


@triton.jit
def int8_gemm_kernel(
    a_ptr,
    b_ptr,
    a_scale_ptr,
    b_scale_ptr,
    M,
    N,
    K,
    c_ptr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SCALED: tl.constexpr,
):
    """Grid ``(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))``; ``C`` is int32, or float16 if SCALED."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(
            a_ptr + offs_m[:, None] * K + k[None, :],
            mask=(offs_m[:, None] < M) & (k[None, :] < K),
            other=0,
        )
        b = tl.load(
            b_ptr + offs_n[None, :] * K + k[:, None],
            mask=(k[:, None] < K) & (offs_n[None, :] < N),
            other=0,
        )
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    c_ptrs = c_ptr + offs_m[:, None] * N + offs_n[None, :]
    if SCALED:
        a_scale = tl.load(a_scale_ptr + offs_m, mask=offs_m < M, other=0.0)
        b_scale = tl.load(b_scale_ptr + offs_n, mask=offs_n < N, other=0.0)
        scaled = acc.to(tl.float32) * a_scale[:, None] * b_scale[None, :]
        tl.store(c_ptrs, scaled.to(tl.float16), mask=mask)
    else:
        tl.store(c_ptrs, acc, mask=mask)


def _launch(a, b, a_scale, b_scale, out, scaled: bool, config: dict | None) -> torch.Tensor:
    cfg = {**INT8_CONFIG, **(config or {})}
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need int8 A [M, K] and B [N, K], got {a.shape} and {b.shape}")
    m, k = a.shape
    n = b.shape[0]
    grid = (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
    int8_gemm_kernel[grid](
        a.contiguous(), b.contiguous(), a_scale, b_scale, m, n, k, out, SCALED=scaled, **cfg
    )
    return out


def int8_gemm(a: torch.Tensor, b: torch.Tensor, config: dict | None = None) -> torch.Tensor:
    """Exact ``A @ B^T`` as int32 ``[M, N]``."""
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32, device=a.device)
    # The scale pointers are not read when SCALED is off; the output stands in for them.
    return _launch(a, b, out, out, out, False, config)


def w8a8_linear(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    config: dict | None = None,
) -> torch.Tensor:
    """``(a_scale[:, None] * A) @ (b_scale[:, None] * B)^T`` as float16 ``[M, N]``."""
    if a_scale.shape != (a.shape[0],) or b_scale.shape != (b.shape[0],):
        raise ValueError("need one activation scale per row of A and one weight scale per row of B")
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.float16, device=a.device)
    a_scale, b_scale = a_scale.float().contiguous(), b_scale.float().contiguous()
    return _launch(a, b, a_scale, b_scale, out, True, config)
