"""A frame-question dataset written by its `nvila-sim` command and read back as training
samples, checked record by record against what a test expects."""

from pathlib import Path

from nvila_core.train.data import read_llava_dataset
from nvila_nav.sim import cli as sim_cli


def assert_cli_questions(
    command: str,
    rollouts: Path,
    out: Path,
    capsys,
    file: str,
    prompt: str,
    expected: dict[str, tuple[tuple[bytes, ...], str]],
) -> None:
    """`nvila-sim COMMAND --data ROLLOUTS --out OUT` writes OUT/FILE and says so; read back,
    it holds exactly the `expected` records (id -> (its frames' bytes, answer)), each asking
    `prompt` on those frames."""
    assert sim_cli.main([command, "--data", str(rollouts), "--out", str(out)]) == 0
    path = out / file
    said = capsys.readouterr().out
    assert f"{path.stem} questions" in said and str(path) in said  # e.g. "route_ahead questions"
    samples = [s for group in read_llava_dataset(path, "q") for s in group]
    assert {s.sample_id.removeprefix("q/"): s.answer for s in samples} == {
        key: answer for key, (_, answer) in expected.items()
    }
    for sample in samples:
        assert sample.prompt == prompt
        shown = tuple(frame.read_bytes() for frame in sample.frame_paths)
        assert shown == expected[sample.sample_id.removeprefix("q/")][0]
