"""Calibration data and activation statistics for post-training quantization.

Calibration samples are NaVILA navigation queries built from real camera images, because the
robot's deployment distribution is what the activation ranges must cover: `--calib DATA` is a
folder searched recursively for images (an episode dataset written by `nvila-sim rollout` works
as is). Consecutive images of one folder form one query's frame history; instructions come from
`DATA/instructions.txt` (one per line) or a small built-in set.

`record_inputs` hooks nn.Linear modules and keeps, per module, the per-channel max |x| of the
input (SmoothQuant, static INT8 scales) and an evenly spaced subset of input rows (AWQ's scale
search), capped so an 8B model's statistics fit in host memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from nvila_core.model.image_processing import ImageLike
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs, NVILAProcessor
from nvila_core.progress import track

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
INSTRUCTIONS_FILE = "instructions.txt"
DEFAULT_INSTRUCTIONS = (
    "Walk forward along the hallway and stop at the second door on the left.",
    "Turn right at the table, go past the sofa and wait next to the plant.",
    "Go through the doorway, turn left and stop in front of the kitchen counter.",
    "Move toward the window, then turn around and stop by the bookshelf.",
)
DEFAULT_MAX_ROWS = 1024


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message names the path."""


def find_images(path: str | Path) -> list[Path]:
    """Every image under `path` (or `path` itself), sorted so frames of a folder stay in order."""
    root = Path(path)
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_SUFFIXES else []
    if not root.is_dir():
        raise CalibrationError(f"{root}: calibration data not found")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_instructions(path: str | Path) -> list[str]:
    file = Path(path) / INSTRUCTIONS_FILE if Path(path).is_dir() else None
    if file is not None and file.is_file():
        lines = [line.strip() for line in file.read_text().splitlines()]
        if any(lines):
            return [line for line in lines if line]
    return list(DEFAULT_INSTRUCTIONS)


def calibration_inputs(
    processor: NVILAProcessor,
    images: Sequence[ImageLike],
    instructions: Sequence[str] = DEFAULT_INSTRUCTIONS,
    max_samples: int = 16,
    frames_per_sample: int | None = None,
) -> list[ModelInputs]:
    """Navigation queries over consecutive windows of `images`, instructions cycled."""
    if not images:
        raise CalibrationError("no calibration images")
    window = frames_per_sample or processor.config.num_video_frames
    samples = []
    for start in range(0, len(images), window):
        if len(samples) >= max_samples:
            break
        frames = list(images[start : start + window])
        instruction = instructions[len(samples) % len(instructions)]
        samples.append(processor.navigation(instruction, frames))
    return samples


def load_calibration(
    path: str | Path,
    processor: NVILAProcessor,
    max_samples: int = 16,
) -> list[ModelInputs]:
    """Navigation queries from the images (and instructions) under `path`."""
    files = find_images(path)
    if not files:
        raise CalibrationError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    window = processor.config.num_video_frames
    images = []
    for file in files[: max_samples * window]:
        try:
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        except OSError as err:
            raise CalibrationError(f"{file}: not a readable image ({err})") from err
    return calibration_inputs(processor, images, read_instructions(path), max_samples)


@dataclass
class InputStats:
    """What one linear saw as input over the calibration set."""

    absmax: torch.Tensor  # float32 [in]: per-channel max |x|
    rows: list[torch.Tensor] = field(default_factory=list)  # kept input rows, [n_i, in] each

    def samples(self) -> torch.Tensor:
        """float32 [n, in] of the kept rows."""
        return torch.cat(self.rows, dim=0).float()


@torch.no_grad()
def record_inputs(
    model: nn.Module,
    names: Sequence[str],
    run: Callable[[], None],
    rows_per_call: int = 0,
) -> dict[str, InputStats]:
    """Statistics of the inputs of the linears `names` while `run()` drives `model`.

    `rows_per_call` > 0 also keeps that many evenly spaced input rows per forward call.
    """
    stats: dict[str, InputStats] = {}
    hooks = []

    def hook(name: str) -> Callable:
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            absmax = x.abs().amax(dim=0).float().cpu()
            entry = stats.get(name)
            if entry is None:
                entry = stats[name] = InputStats(absmax)
            else:
                torch.maximum(entry.absmax, absmax, out=entry.absmax)
            if rows_per_call > 0:
                if x.shape[0] > rows_per_call:
                    index = torch.linspace(0, x.shape[0] - 1, rows_per_call).round().long()
                    x = x[index.to(x.device)]
                entry.rows.append(x.cpu().clone())

        return record

    try:
        for name in names:
            hooks.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
        run()
    finally:
        for handle in hooks:
            handle.remove()
    missing = [name for name in names if name not in stats]
    if missing:
        raise CalibrationError(f"calibration never ran {missing[0]} (and {len(missing) - 1} more)")
    return stats


def frame_batches(samples: Sequence[ModelInputs]) -> list[torch.Tensor]:
    """[T, 3, S, S] pixels per sample: every frame/video/image tile it shows the vision tower."""
    return [torch.cat([item.pixel_values for item in s.media], dim=0) for s in samples if s.media]


def run_vision(model: NVILAModel, samples: Sequence[ModelInputs]) -> Callable[[], None]:
    """A `run` for `record_inputs` that pushes every sample's frames through ViT + projector."""

    def run() -> None:
        for pixels in track(frame_batches(samples), "calibration pass (vision)", "queries"):
            model.frame_features(pixels)

    return run


def run_llm(model: NVILAModel, samples: Sequence[ModelInputs]) -> Callable[[], None]:
    """A `run` for `record_inputs` that prefills the LLM with every sample's spliced prompt."""

    def run() -> None:
        for sample in track(samples, "calibration pass (LLM)", "queries"):
            embeds = model.embed_inputs(sample.input_ids, sample.media)
            model(embeds, use_cache=False, logits_to_keep=1)

    return run
