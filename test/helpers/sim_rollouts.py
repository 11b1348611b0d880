"""Real simulator rollouts for tests, written by `nvila-sim episodes` then `nvila-sim rollout`."""

from pathlib import Path

from nvila_nav.sim import cli as sim_cli


def write_sim_rollouts(root: Path, n: int, *rollout_args: str, tier: str | None = None) -> Path:
    """`n` train episodes (of one `tier`, or the default mix) rolled out by the expert at 64x48
    into `root/data`, with the extra `rollout_args` (e.g. "--decision-frames", "--perturb",
    "0.2"); returns that dataset folder."""
    episodes = root / "eps.json.gz"
    args = ["episodes", "--split", "train", "--n", str(n), "--out", str(episodes)]
    assert sim_cli.main([*args, *(["--tier", tier] if tier else [])]) == 0
    out = root / "data"
    args = ["rollout", "--episodes", str(episodes), "--out", str(out), *rollout_args]
    assert sim_cli.main([*args, "--width", "64", "--height", "48"]) == 0
    return out
