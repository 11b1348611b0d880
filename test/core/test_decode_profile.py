"""The decode profile in smoke mode: onnxruntime's per-node profile of real decode calls, parted."""

import csv

from nvila_core import decode_profile


def test_quick_decode_profile_parts_each_variants_decode_step(tmp_path):
    assert decode_profile.main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    with open(tmp_path / decode_profile.CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    variants = [v.name for v in decode_profile.VARIANTS]
    assert list(dict.fromkeys(r["variant"] for r in rows if r["variant"] in variants)) == variants
    for variant in variants:
        parts = {
            r["metric"]: float(r["value"])
            for r in rows
            if r["benchmark"] == "decode_profile" and r["variant"] == variant
        }
        summary = {
            r["metric"]: float(r["value"])
            for r in rows
            if r["benchmark"] == "decode_summary" and r["variant"] == variant
        }
        # the parts are the profiled wall time per token, split (each part is measured, the
        # host part is the wall time outside the session's runs)
        assert (
            abs(sum(parts.values()) - summary["wall, profiled"]) < 0.05 * summary["wall, profiled"]
        ), (parts, summary)
        assert all(value >= 0 for value in parts.values()), parts
        assert summary["tokens_per_s"] > 0 and 0 < summary["fraction_of_bound"] < 1
        # the linears' kernels were found in the trace: the 4-bit one where the LLM is W4A16
        linear = "MatMulNBits" if "w4a16" in variant else "MatMul"
        assert summary[f"{linear} effective bandwidth"] > 0, summary
    assert (tmp_path / decode_profile.PNG_NAME).stat().st_size > 0
