"""`make bench`'s model benchmark in smoke mode: every benchmark lands in the CSV, the PNG exists."""

import csv
import math

from nvila_core import bench


def test_quick_bench_writes_every_benchmark(tmp_path):
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    with open(tmp_path / bench.CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    assert {r["benchmark"] for r in rows} == set(bench.BENCHMARKS)
    assert all(r["unit"] and math.isfinite(float(r["value"])) for r in rows)
    identical = [r for r in rows if r["metric"] == "tokens_identical"]
    assert [float(r["value"]) for r in identical] == [1.0]
    assert (tmp_path / bench.PNG_NAME).stat().st_size > 0
    decision = {(r["variant"], r["metric"]) for r in rows if r["benchmark"] == "decision"}
    assert ("navigate vs NaVILA loop", "speedup") in decision
    assert ("choose vs generate", "speedup") in decision
