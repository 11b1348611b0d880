"""Episode folders in the `nvila-sim rollout` format with random frames, written without the
simulator (for tests that need training data but not MuJoCo, e.g. on a GPU machine)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_episode_dataset(root: Path, episodes: int, actions: int, seed: int) -> Path:
    """A tiny dataset in the `nvila-sim rollout` episode-folder format."""
    rng = np.random.default_rng(seed)
    entries = []
    for e in range(episodes):
        folder = root / f"ep{e}"
        (folder / "frames").mkdir(parents=True)
        frames = []
        for f in range(actions + 1):
            name = f"frames/{f:06d}.png"
            Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(folder / name)
            frames.append({"file": name, "t": f * 0.5, "pose": [0.0, 0.0, 0.0]})
        moves = ["move forward 75 cm", "turn left 30 degrees", "turn right 15 degrees", "stop"]
        meta = {
            "instruction": f"walk past the sofa to door {e}",
            "frames": frames,
            "actions": [{"text": moves[a % 4], "frame_index": a} for a in range(actions)],
        }
        (folder / "meta.json").write_text(json.dumps(meta))
        entries.append({"episode_id": f"ep{e}", "dir": f"ep{e}", "num_actions": actions})
    index = {"format": "nvila_nav.sim.dataset", "version": 1, "episodes": entries}
    (root / "index.json").write_text(json.dumps(index))
    return root
