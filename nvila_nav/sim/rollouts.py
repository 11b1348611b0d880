"""Expert rollouts written as a training dataset, in parallel worker processes.

Each worker owns one `Simulator` (MuJoCo models and the EGL renderer are per process) and takes
episodes grouped by scene, so every scene's model is built about once per worker. The index
keeps the episodes file's order, and each episode's perturbations are seeded by its position in
that file, so the dataset does not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nvila_nav.sim.dataset import write_episode, write_index
from nvila_nav.sim.episodes import Episode
from nvila_nav.sim.robot import CameraConfig


@dataclass(frozen=True)
class RolloutSettings:
    camera: CameraConfig
    frame_hz: float = 2.0
    perturb: float = 0.0
    seed: int = 0
    image_format: str = "jpg"
    decision_frames: bool = False
    approach: bool = False
    stop_band: float | None = None


def _episode_seed(settings: RolloutSettings, index: int) -> int:
    return settings.seed * 1_000_003 + index


def _run_chunk(args: tuple[Path, RolloutSettings, list[tuple[int, Episode]]]) -> list[dict]:
    from nvila_nav.sim.env import Simulator
    from nvila_nav.sim.expert import run_expert

    out, settings, chunk = args
    entries = []
    with Simulator(settings.camera) as sim:
        for index, episode in chunk:
            run = run_expert(
                sim,
                episode,
                render=True,
                frame_hz=settings.frame_hz,
                perturb=settings.perturb,
                seed=_episode_seed(settings, index),
                decision_frames=settings.decision_frames,
                approach=settings.approach,
                stop_band=settings.stop_band,
            )
            entry = write_episode(out, run, settings.camera, image_format=settings.image_format)
            entries.append({"index": index, **entry})
    return entries


def write_rollouts(
    episodes: Sequence[Episode],
    out: str | Path,
    settings: RolloutSettings,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Roll the expert out on `episodes`, write frames and meta under `out`, and the index.

    Returns the index entries in file order; `progress(n)` is called as chunks of n finish.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(episodes)), key=lambda i: (episodes[i].scene_id, i))
    size = max(1, min(16, len(order) // max(1, workers * 4) or 1))
    chunks = [
        (out, settings, [(i, episodes[i]) for i in order[k : k + size]])
        for k in range(0, len(order), size)
    ]
    entries: list[dict] = [{}] * len(episodes)

    def collect(done: list[dict]) -> None:
        for entry in done:
            entries[entry.pop("index")] = entry
        if progress is not None:
            progress(len(done))

    if workers <= 1:
        for chunk in chunks:
            collect(_run_chunk(chunk))
    else:
        # spawn: a forked EGL context or MuJoCo renderer from the parent is not safe to reuse.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_run_chunk, chunks):
                collect(done)
    write_index(out, entries, settings.frame_hz, settings.camera, settings.stop_band)
    return entries
