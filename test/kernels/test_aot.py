"""AOT compilation for Orin on this CPU-only host: sm_87 PTX with ISA 8.5, cubin, and a manifest."""

import json
import re

import pytest

from trt_kernels import aot

EXPECTED = {
    # fp16 accumulation on tensor cores: f16 A, B, C and D
    "w4a16_gemm": r"mma\.sync\.aligned\.m16n8k16\.row\.col\.f16\.f16\.f16\.f16",
    # fp16 accumulation in the GEMV: half fused multiply-adds (packed half2 from Triton 3.9 on;
    # Triton 3.6 emits them one half at a time)
    "w4a16_gemv": r"fma\.rn\.f16(x2)?\s",
    "w8a8_gemm": r"mma\.sync\.aligned\.m16n8k32\.row\.col(\.satfinite)?\.s32\.s8\.s8\.s32",
}


@pytest.fixture(scope="module")
def manifest(aot_artifacts):
    return json.loads((aot_artifacts / aot.MANIFEST).read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ptx_targets_orin_with_isa_8_5(aot_artifacts, manifest, name):
    entry = manifest["kernels"][name]
    ptx = (aot_artifacts / entry["ptx"]).read_text()
    assert re.search(r"^\.version 8\.5$", ptx, re.M)
    assert re.search(r"^\.target sm_87$", ptx, re.M)
    assert re.search(EXPECTED[name], ptx), f"{name}: expected instruction pattern missing"
    assert (aot_artifacts / entry["cubin"]).read_bytes()[:4] == b"\x7fELF"
    assert entry["target"] == "sm_87" and entry["ptx_version"] == "8.5"


def test_w4a16_gemm_does_not_accumulate_in_fp32(aot_artifacts, manifest):
    ptx = (aot_artifacts / manifest["kernels"]["w4a16_gemm"]["ptx"]).read_text()
    assert "f32.f16.f16.f32" not in ptx


def test_manifest_has_what_a_launcher_needs(manifest):
    gemm = manifest["kernels"]["w4a16_gemm"]
    assert [p["name"] for p in gemm["signature"]] == [
        "x_ptr",
        "w_ptr",
        "s_ptr",
        "M",
        "N",
        "K",
        "y_ptr",
    ]
    assert gemm["grid"] == ["cdiv(M, 64)", "cdiv(N, 64)", "1"]
    assert gemm["constexprs"] == {
        "BLOCK_M": 64,
        "BLOCK_N": 64,
        "BLOCK_K": 64,
        "GROUP": 128,
        "ACC_FP16": True,
    }
    assert manifest["kernels"]["w4a16_gemv"]["grid"] == ["cdiv(N, 128)", "split_k", "M"]
    for entry in manifest["kernels"].values():
        assert entry["block"] == [entry["num_warps"] * 32, 1, 1]
        assert 0 <= entry["shared_mem"] <= 48 * 1024  # launchable without an opt-in attribute
        assert entry["global_scratch_size"] == 0
        assert entry["ptx_params"] == len(entry["signature"]) + 2  # Triton's two scratch pointers


def test_load_checks_the_ptx_against_the_manifest(aot_artifacts, tmp_path):
    entry, ptx = aot.load(aot_artifacts, "w4a16_gemv")
    assert entry["entry"] == "w4a16_gemv_kernel" and ".entry w4a16_gemv_kernel" in ptx
    for path in aot_artifacts.glob("*"):
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "w4a16_gemv.ptx").write_text(ptx.replace("sm_87", "sm_90"))
    with pytest.raises(ValueError, match="does not match"):
        aot.load(tmp_path, "w4a16_gemv")
