"""`make bench`: simulator throughput, then model speed (nvila_core.bench), into one folder.

python -m nvila_nav.bench [--out outputs/bench] [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import nvila_core.bench
import nvila_nav.sim.bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="outputs/bench", help="output directory")
    parser.add_argument("--quick", action="store_true", help="model bench in smoke mode")
    args = parser.parse_args(argv)
    nvila_nav.sim.bench.main(["--out", args.out])
    nvila_core.bench.main(["--out", args.out, *(["--quick"] if args.quick else [])])
    print(f"benchmarks in {args.out}/: sim_bench.{{csv,png}}, model_bench.{{csv,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
