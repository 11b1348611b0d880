"""`nvila-nav-landmark-probe`: do a model's visual tokens tell which landmark is in view?

A linear probe, trained on the tokens the projector makes of one frame (what the LLM reads),
predicts the colour and the kind of the nearest landmark within `max_distance` of the camera;
the same probe on the frame shrunk to 16 x 12 pixels is the baseline. Frames and the truth come
from caption or question datasets (`nvila-sim captions`), whose records carry scene and pose.
A model whose tokens hold no more than the thumbnail cannot match "the pink shelf" of an
instruction to what it sees.

    nvila-nav-landmark-probe --model models/navila-nano \\
        --train data/nano/captions/captions.json --val data/nano/val_captions/captions.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nvila_core.progress import track
from nvila_nav.sim.captions import PROMPT
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.sight import landmarks_in_view
from nvila_nav.sim.world import world_for_scene

THUMBNAIL = (16, 12)
HFOV_DEG = 79.0


def nearest_landmarks(path: str | Path, limit: int, max_distance: float) -> list[dict]:
    """Records of a LLaVA-format simulator file whose view has a landmark within
    `max_distance`, with its colour and kind (the first `limit` records are looked at)."""
    path = Path(path)
    rows = []
    for record in json.loads(path.read_text())[:limit]:
        world = world_for_scene(record["scene_id"])
        seen = landmarks_in_view(world, Pose(*record["pose"]), HFOV_DEG)
        if seen and seen[0][0] <= max_distance:
            landmark = world.landmark(seen[0][1])
            image = path.parent / record["image"]
            rows.append({"image": image, "colour": landmark.colour, "kind": landmark.kind})
    return rows


def features(engine, rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the projector's tokens of the frame, flattened, and the 16 x 12 thumbnail."""
    tokens, thumbnails = [], []
    for row in track(rows, "frames", "img"):
        with Image.open(row["image"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        inputs = engine.processor(PROMPT, frames=[rgb])
        with torch.inference_mode():
            encoded = engine.backend.encode_media(inputs.media, [None])
        tokens.append(encoded.embeds[0].float().reshape(-1).cpu().numpy())
        small = Image.fromarray(rgb).resize(THUMBNAIL, Image.BILINEAR)
        thumbnails.append(np.asarray(small, np.float32).reshape(-1) / 255.0)
    return np.stack(tokens), np.stack(thumbnails)


def probe_accuracy(
    train_x: np.ndarray,
    train_y: Sequence[str],
    val_x: np.ndarray,
    val_y: Sequence[str],
    steps: int = 300,
    seed: int = 0,
) -> float:
    """Held-out accuracy of a multinomial logistic regression (standardised inputs, Adam)."""
    classes = sorted(set(train_y) | set(val_y))
    index = {c: i for i, c in enumerate(classes)}
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    b = torch.tensor((val_x - mean) / std, dtype=torch.float32)
    ta = torch.tensor([index[c] for c in train_y])
    tb = torch.tensor([index[c] for c in val_y])
    torch.manual_seed(seed)
    linear = torch.nn.Linear(a.shape[1], len(classes))
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear(a), ta).backward()
        optimizer.step()
    with torch.no_grad():
        return float((linear(b).argmax(1) == tb).float().mean())


def majority(train_y: Sequence[str], val_y: Sequence[str]) -> float:
    """Accuracy of always answering the training set's most frequent class."""
    values, counts = np.unique(list(train_y), return_counts=True)
    return float(np.mean(np.asarray(val_y) == values[counts.argmax()]))


def measure(
    model: str, train: Path, val: Sequence[Path], limit: int = 4000, max_distance: float = 3.0
) -> dict:
    from nvila_core.runtime.engine import Engine

    engine = Engine.from_pretrained(model)
    train_rows = nearest_landmarks(train, limit, max_distance)
    val_rows = [row for path in val for row in nearest_landmarks(path, limit, max_distance)]
    if len(train_rows) < 2 or not val_rows:
        raise ValueError(
            f"too few views with a landmark within {max_distance} m "
            f"({len(train_rows)} train, {len(val_rows)} val)"
        )
    train_tokens, train_small = features(engine, train_rows)
    val_tokens, val_small = features(engine, val_rows)
    report: dict = {"train_views": len(train_rows), "val_views": len(val_rows)}
    for target in ("colour", "kind"):
        ty = [r[target] for r in train_rows]
        vy = [r[target] for r in val_rows]
        report[target] = {
            "tokens": round(probe_accuracy(train_tokens, ty, val_tokens, vy), 4),
            "thumbnail": round(probe_accuracy(train_small, ty, val_small, vy), 4),
            "majority": round(majority(ty, vy), 4),
        }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nvila-nav-landmark-probe", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or preset")
    parser.add_argument("--train", required=True, type=Path, help="captions/questions JSON")
    parser.add_argument("--val", required=True, type=Path, nargs="+", help="held-out JSON file(s)")
    parser.add_argument("--limit", type=int, default=4000, help="records read per file")
    parser.add_argument("--max-distance", type=float, default=3.0, help="metres from the camera")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    report = measure(args.model, args.train, args.val, args.limit, args.max_distance)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
