"""The GPU benchmark and AOT launch check refuse clearly without CUDA (they are not run in CI)."""

import pytest
import torch

from trt_kernels import bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would run")
def test_bench_refuses_without_cuda(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench.main(["--out", str(tmp_path / "bench"), "--quick"])
    assert not (tmp_path / "bench").exists()


def test_every_benchmark_shape_fits_the_kernels():
    """K in blocks of 128 and N 16-aligned, as the AOT kernels and the ONNX rewrite require."""
    for n, k in bench.SHAPES.values():
        assert k % 128 == 0 and n % 16 == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the check would run")
def test_launch_check_refuses_without_cuda(tmp_path):
    from trt_kernels import launch_check

    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        launch_check.main(["--out", str(tmp_path)])


def test_launch_check_reads_the_manifest_grid_rules():
    from trt_kernels.aot import SPECS
    from trt_kernels.launch_check import grid_size

    values = {"M": 77, "N": 2048, "K": 1536, "split_k": 4}
    gemm = [grid_size(rule, values) for rule in SPECS["w4a16_gemm"].grid]
    gemv = [grid_size(rule, values) for rule in SPECS["w4a16_gemv"].grid]
    assert gemm == [2, 32, 1] and gemv == [16, 4, 77]
    with pytest.raises(ValueError, match="unknown grid rule"):
        grid_size("M * 2", values)
