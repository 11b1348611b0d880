"""Kernel tests. Those that run kernels in Triton's CPU interpreter live in ``interpreted/``.

TRITON_INTERPRET is read when a kernel is defined, and by then this process has imported triton
(torch._dynamo imports it whenever it is installed), so triton's own library kernels would stay
compiled-mode: ``interpreted/`` runs in a fresh pytest process (test_interpreted.py) and is not
collected here. This process keeps compiled-mode kernels, which is what the AOT tests need.
"""

from pathlib import Path

import pytest

from trt_kernels import aot

collect_ignore = ["interpreted"]


@pytest.fixture(scope="session")
def aot_artifacts(tmp_path_factory) -> Path:
    """The kernels compiled for sm_87 / PTX ISA 8.5 by the CLI entry point, on this CPU-only host."""
    out = tmp_path_factory.mktemp("aot")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_CACHE_DIR", str(out / "cache"))  # compile for real, not from a cache
        patch.delenv("TRITON_INTERPRET", raising=False)
        aot.main(["--out", str(out / "sm87")])
    return out / "sm87"
