"""`nvila-core finetune` end to end: a checkpoint + robot-style episodes in, a merged checkpoint out."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from nvila_core.cli import main
from nvila_core.model.checkpoint import load_checkpoint


def write_episodes(root, count=2, frames=4):
    """Episode folders in the documented format (what `nvila-sim rollout` / `import-bag` write)."""
    entries = []
    rng = np.random.default_rng(0)
    for e in range(count):
        folder = root / f"ep{e}"
        (folder / "frames").mkdir(parents=True)
        frame_list = []
        for k in range(frames):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                folder / "frames" / f"{k:06d}.jpg"
            )
            frame_list.append({"file": f"frames/{k:06d}.jpg", "t": 0.5 * k})
        actions = [
            {"t": 0.0, "text": "turn left 30 degrees", "frame_index": 0},
            {"t": 1.0, "text": "move forward 75 cm", "frame_index": 2},
            {"t": 1.5, "text": "stop", "frame_index": 3},
        ]
        meta = {
            "instruction": f"Walk to the red chair number {e}.",
            "frames": frame_list,
            "actions": actions,
        }
        (folder / "meta.json").write_text(json.dumps(meta))
        entries.append({"episode_id": f"ep{e}", "dir": f"ep{e}", "num_frames": frames})
    index = {"format": "nvila_nav.sim.dataset", "version": 1, "frame_hz": 2.0, "episodes": entries}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.mark.slow
def test_lora_finetune_writes_a_merged_loadable_checkpoint(tmp_path, tiny_checkpoint):
    episodes = write_episodes(tmp_path / "episodes")
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "datasets": [
                    {"name": "robot", "path": str(episodes), "weight": 1.0, "split": "train"}
                ],
            }
        )
    )
    out = tmp_path / "out"
    code = main(
        [
            "finetune",
            "--from",
            str(tiny_checkpoint),
            "--data",
            str(mixture),
            "--out",
            str(out),
            "--llm-mode",
            "lora",
            "--vision-mode",
            "layernorm",
            "--lora-r",
            "4",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    (final,) = list(out.glob("*/final"))
    model, _ = load_checkpoint(final)
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora" in n for n in names), "LoRA adapters must be merged before saving"
    assert (final.parent / "metrics.csv").is_file()
