"""The GPU benchmark refuses clearly on a machine without CUDA (it was not run in CI)."""

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
