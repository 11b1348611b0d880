"""Reading and writing NVILA checkpoints as safetensors, in the two on-disk layouts (nvila.md §1.1).

- "vila": the `llava_llama` split layout of the released NVILA / NaVILA checkpoints: a top-level
  `config.json` plus `llm/`, `vision_tower/` and `mm_projector/` folders, each with its own
  `config.json` and (possibly sharded) safetensors. The sub-folder configs are the source of truth.
- "hf": one folder, one `config.json` (`model_type: "nvila"`, `text_config`, `vision_config`) and
  one set of safetensors whose keys carry the `llm.`, `vision_tower.` and `mm_projector.` prefixes.

Only safetensors are read (never pickles); anything that does not fit the model raises a
`CheckpointError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from nvila_core.model.configuration import PROJECTOR_TYPES, ConfigError, NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.projector import MultimodalProjector
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, load_tokenizer, media_token_ids
from nvila_core.model.vision import VisionTower

LAYOUTS = ("vila", "hf")
VILA_PARTS = ("llm", "vision_tower", "mm_projector")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 4 * 2**30
# Tensors a checkpoint may carry that NVILA never runs, per part: the SigLIP attention-pooling
# head, present in vision towers saved from google/siglip-so400m-patch14-384 (NaVILA's 857 MB
# vision_tower/ vs NVILA's 827 MB without it). Features come from an inner layer instead.
UNUSED_TENSOR_PREFIXES = {"vision_tower": ("vision_model.head.",)}
_HF_MODEL_TYPES = ("nvila", "nvila_lite")


class CheckpointError(ValueError):
    """A checkpoint folder that does not describe a loadable model; the message names the file."""


# ---------------------------------------------------------------- small file helpers
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------- layout and config
def detect_layout(path: str | Path) -> str:
    """ "vila" or "hf", from the top-level `config.json`."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint folder not found")
    data = _read_json(root / "config.json")
    model_type = data.get("model_type")
    if model_type == "llava_llama" or "llm_cfg" in data:
        return "vila"
    if model_type in _HF_MODEL_TYPES or "text_config" in data:
        return "hf"
    raise CheckpointError(
        f"{root / 'config.json'}: unknown model_type {model_type!r}; expected 'llava_llama' "
        "(VILA split layout) or 'nvila' (single-folder layout)"
    )


def _normalize_llm_config(llm: dict[str, Any]) -> dict[str, Any]:
    """Configs written by transformers >= 5 keep rope settings under `rope_parameters` only."""
    rope = llm.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" in llm:
        return llm
    llm = {**llm, "rope_theta": rope.get("rope_theta", 10000.0)}
    if rope.get("rope_type", "default") != "default" and "rope_scaling" not in llm:
        llm["rope_scaling"] = rope
    return llm


def _projector_type(source: Path, data: dict[str, Any]) -> str:
    projector_type = data.get("mm_projector_type")
    if projector_type not in PROJECTOR_TYPES:
        raise CheckpointError(
            f"{source}: unknown projector type {projector_type!r} (known: {', '.join(PROJECTOR_TYPES)})"
        )
    return projector_type


def _finish_config(
    source: Path,
    data: dict[str, Any],
    llm: dict[str, Any],
    vision: dict[str, Any],
    projector_type: str,
    preprocessor: Path,
    name: str,
) -> NVILAConfig:
    """NVILAConfig from a VILA-style top-level dict plus the sub-configs that override it."""
    vila = {**data, "mm_projector_cfg": {"mm_projector_type": projector_type}}
    own = data.get("nvila_core") if isinstance(data.get("nvila_core"), dict) else {}
    try:
        config = NVILAConfig.from_vila_config(
            vila, _normalize_llm_config(llm), vision, name=own.get("name", name)
        )
        own_keys = (
            "architecture",
            "chat_template",
            "projector_token_order",
            "nav_prompt",
            "nav_history",
            "nav_verdict",
            "nav_initial_turn",
        )
        overrides = {k: own[k] for k in own_keys if k in own}
        if "nav_previous_actions" in own:
            overrides["nav_previous_actions"] = int(own["nav_previous_actions"])
        if "nav_merge_actions" in own:
            overrides["nav_merge_actions"] = bool(own["nav_merge_actions"])
        if "nav_statement" in own:
            overrides["nav_statement"] = bool(own["nav_statement"])
        if isinstance(data.get("model_dtype"), str):
            overrides["torch_dtype"] = data["model_dtype"].removeprefix("torch.")
        if preprocessor.is_file():
            processor = _read_json(preprocessor)
            for key in ("image_mean", "image_std"):
                if key in processor:
                    overrides[key] = [float(v) for v in processor[key]]
        return dataclasses.replace(config, **overrides)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from err


def _vila_config(root: Path) -> NVILAConfig:
    top = root / "config.json"
    data = _read_json(top)
    for part in VILA_PARTS:
        if not (root / part).is_dir():
            raise CheckpointError(
                f"{root}: missing folder {part}/ (the VILA split layout needs "
                f"{', '.join(p + '/' for p in VILA_PARTS)})"
            )
    llm = _read_json(root / "llm" / "config.json")
    vision = _read_json(root / "vision_tower" / "config.json")
    projector_file = root / "mm_projector" / "config.json"
    projector = _read_json(projector_file)
    projector_type = _projector_type(projector_file, projector)
    return _finish_config(
        top,
        data,
        llm,
        vision,
        projector_type,
        root / "vision_tower" / "preprocessor_config.json",
        root.name,
    )


def _hf_config(root: Path) -> NVILAConfig:
    source = root / "config.json"
    data = _read_json(source)
    for key in ("text_config", "vision_config"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(f"{source}: missing {key!r}")
    nested = data.get("mm_projector_cfg") if isinstance(data.get("mm_projector_cfg"), dict) else {}
    declared = data.get("mm_projector_type") or nested.get("mm_projector_type")
    projector_type = _projector_type(source, {"mm_projector_type": declared})
    return _finish_config(
        source,
        data,
        data["text_config"],
        data["vision_config"],
        projector_type,
        root / "preprocessor_config.json",
        root.name,
    )


def read_config(path: str | Path) -> NVILAConfig:
    """The NVILAConfig of a checkpoint folder, without touching its weights."""
    root = Path(path)
    return _vila_config(root) if detect_layout(root) == "vila" else _hf_config(root)


# ---------------------------------------------------------------- reading tensors
def _tensor_files(folder: Path) -> tuple[dict[str, Path], str]:
    """{tensor name: file} of a folder's safetensors, and a description of where they are."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map'")
        files = sorted({folder / name for name in weight_map.values()})
        source = str(index)
    elif (folder / SINGLE_FILE).is_file():
        files = [folder / SINGLE_FILE]
        source = str(files[0])
    else:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(
                f"{folder}: no safetensors weights ({SINGLE_FILE} or {INDEX_FILE}); pickled "
                ".bin/.pt files are never loaded"
            )
        source = f"{folder}/*.safetensors"
    located: dict[str, Path] = {}
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{source}: shard {file.name} not found")
        try:
            with safe_open(str(file), framework="pt") as reader:
                names = list(reader.keys())
        except Exception as err:  # safetensors raises its own error types for broken files
            raise CheckpointError(f"{file}: not a readable safetensors file ({err})") from err
        for name in names:
            if name in located:
                raise CheckpointError(f"{file}: tensor {name!r} is also in {located[name]}")
            located[name] = file
    if index.is_file():
        for name, shard in weight_map.items():
            if located.get(name) != folder / shard:
                raise CheckpointError(f"{index}: tensor {name!r} is not in {shard}")
    return located, source


def _targets(module: nn.Module, prefix: str) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Tensors to fill, by checkpoint name, and the names that alias an earlier one (tied)."""
    targets: dict[str, torch.Tensor] = {}
    aliases: set[str] = set()
    seen: set[int] = set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.add(prefix + name)
        seen.add(id(tensor))
        targets[prefix + name] = tensor
    return targets, aliases


@torch.no_grad()
def _load_tensors(
    located: dict[str, Path],
    source: str,
    targets: dict[str, torch.Tensor],
    aliases: set[str],
    unused_prefixes: tuple[str, ...] = (),
) -> None:
    """Copy every checkpoint tensor into its target (casting dtype); all-or-error."""
    located = {k: f for k, f in located.items() if not k.startswith(unused_prefixes)}
    unexpected = sorted(set(located) - set(targets))
    if unexpected:
        name = unexpected[0]
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{located[name]}: unexpected tensor {name!r}{more}")
    missing = sorted(set(targets) - set(located) - aliases)
    if missing:
        name = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{source}: missing tensor {name!r} of shape {list(targets[name].shape)}{more}"
        )
    by_file: dict[Path, list[str]] = {}
    for name, file in located.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as reader:
            for name in names:
                target = targets[name]
                found = list(reader.get_slice(name).get_shape())
                if found != list(target.shape):
                    raise CheckpointError(
                        f"{file}: tensor {name!r} has shape {found}, expected {list(target.shape)}"
                    )
                if name not in aliases:
                    target.copy_(reader.get_tensor(name))


def _load_vila_weights(root: Path, model: NVILAModel) -> None:
    for part in VILA_PARTS:
        located, source = _tensor_files(root / part)
        targets, aliases = _targets(getattr(model, part), "")
        unused = UNUSED_TENSOR_PREFIXES.get(part, ())
        _load_tensors(located, source, targets, aliases, unused)


def _load_hf_weights(root: Path, model: NVILAModel) -> None:
    located, source = _tensor_files(root)
    targets: dict[str, torch.Tensor] = {}
    aliases: set[str] = set()
    for part in VILA_PARTS:
        part_targets, part_aliases = _targets(getattr(model, part), f"{part}.")
        targets.update(part_targets)
        aliases |= part_aliases
    unused = tuple(
        f"{part}.{prefix}"
        for part, prefixes in UNUSED_TENSOR_PREFIXES.items()
        for prefix in prefixes
    )
    _load_tensors(located, source, targets, aliases, unused)


def load_vision_parts(
    path: str | Path, config: NVILAConfig | None = None
) -> tuple[VisionTower, MultimodalProjector]:
    """A checkpoint's vision tower and projector alone (float32), without its LLM: what a frame
    head with its own tuned vision builds on (`nvila_core.model.head_vision`)."""
    root = Path(path)
    config = read_config(root) if config is None else config
    parts = {
        "vision_tower": VisionTower(config),
        "mm_projector": MultimodalProjector.from_config(config),
    }
    hf = detect_layout(root) != "vila"
    for part, module in parts.items():
        located, source = _tensor_files(root if hf else root / part)
        prefix = f"{part}." if hf else ""
        if hf:
            located = {k: f for k, f in located.items() if k.startswith(prefix)}
        targets, aliases = _targets(module, prefix)
        unused = tuple(prefix + u for u in UNUSED_TENSOR_PREFIXES.get(part, ()))
        _load_tensors(located, source, targets, aliases, unused)
    return parts["vision_tower"].float().eval(), parts["mm_projector"].float().eval()


def load_checkpoint(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[NVILAModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a checkpoint folder in either layout (auto-detected).

    Weights are cast to `dtype` (default: the checkpoint's own `model_dtype`).
    """
    root = Path(path)
    layout = detect_layout(root)
    config = read_config(root)
    tokenizer_dir = root / "llm" if layout == "vila" else root
    try:
        tokenizer = load_tokenizer(tokenizer_dir)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{tokenizer_dir}: {err}") from err
    model = NVILAModel.from_config(
        config,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
        init_weights=False,
    )
    if layout == "vila":
        _load_vila_weights(root, model)
    else:
        _load_hf_weights(root, model)
    model.bind_tokenizer(tokenizer)
    return model.eval(), tokenizer


# ---------------------------------------------------------------- writing
def _state_dict(module: nn.Module, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """CPU copies of a module's tensors in `dtype`, tied aliases dropped (safetensors refuses them)."""
    targets, aliases = _targets(module, prefix)
    return {
        name: tensor.detach()
        .to("cpu", dtype if tensor.is_floating_point() else tensor.dtype)
        .contiguous()
        for name, tensor in targets.items()
        if name not in aliases
    }


def _write_tensors(tensors: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> None:
    """`model.safetensors`, or HF-style shards plus `model.safetensors.index.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt"}
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    total = sum(sizes.values())
    if total <= max_shard_bytes:
        save_file(tensors, str(folder / SINGLE_FILE), metadata=metadata)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    filled = 0
    for name, tensor in tensors.items():
        if shards[-1] and filled + sizes[name] > max_shard_bytes:
            shards.append({})
            filled = 0
        shards[-1][name] = tensor
        filled += sizes[name]
    width = max(5, int(math.log10(len(shards))) + 1)
    weight_map = {}
    for n, shard in enumerate(shards, start=1):
        file = f"model-{n:0{width}d}-of-{len(shards):0{width}d}.safetensors"
        save_file(shard, str(folder / file), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, file))
    _write_json(folder / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})


def _llm_config_json(model: NVILAModel, dtype: torch.dtype) -> dict[str, Any]:
    """The LLM's HF config, with the keys real NVILA checkpoints spell out (rope_theta, ...)."""
    data = model.llm.config.to_dict()
    data.update(model.config.llm_config)
    data["architectures"] = [type(model.llm).__name__]
    data["dtype"] = _dtype_name(dtype)
    return data


def _vision_config_json(config: NVILAConfig) -> dict[str, Any]:
    return {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        **config.vision_config,
        "vision_use_head": False,
    }


def _preprocessor_json(config: NVILAConfig) -> dict[str, Any]:
    """SigLIP image processor settings: bicubic (3) resize to the tile, x/255, (x - mean) / std."""
    return {
        "image_processor_type": "SiglipImageProcessor",
        "do_resize": True,
        "size": {"height": config.tile_size, "width": config.tile_size},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
    }


def save_checkpoint(
    model: NVILAModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    layout: str = "vila",
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write `model` and `tokenizer` to `out_dir` in `layout`; tensors are cast to `dtype`
    (default: the model's). Returns `out_dir`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r} (known: {', '.join(LAYOUTS)})")
    dtype = dtype or model.dtype
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(model.config, torch_dtype=_dtype_name(dtype))
    vila_config = config.to_vila_config()
    if layout == "vila":
        _write_json(root / "config.json", vila_config)
        llm_dir, vision_dir, projector_dir = (root / part for part in VILA_PARTS)
        _write_tensors(_state_dict(model.llm, "", dtype), llm_dir, max_shard_bytes)
        _write_json(llm_dir / "config.json", _llm_config_json(model, dtype))
        tokenizer.save_pretrained(str(llm_dir))
        _write_tensors(_state_dict(model.vision_tower, "", dtype), vision_dir, max_shard_bytes)
        _write_json(vision_dir / "config.json", _vision_config_json(config))
        _write_json(vision_dir / "preprocessor_config.json", _preprocessor_json(config))
        _write_tensors(_state_dict(model.mm_projector, "", dtype), projector_dir, max_shard_bytes)
        _write_json(projector_dir / "config.json", vila_config["mm_projector_cfg"])
        return root
    media_ids = media_token_ids(tokenizer)
    hf_config = {
        key: value
        for key, value in vila_config.items()
        if key not in ("llm_cfg", "vision_tower_cfg")
    }
    hf_config.update(
        architectures=["NVILAModel"],
        model_type="nvila",
        text_config=_llm_config_json(model, dtype),
        vision_config=_vision_config_json(config),
        image_token_id=media_ids[IMAGE_TOKEN],
        video_token_id=media_ids[VIDEO_TOKEN],
    )
    _write_json(root / "config.json", hf_config)
    _write_json(root / "preprocessor_config.json", _preprocessor_json(config))
    tensors = {
        name: tensor
        for part in VILA_PARTS
        for name, tensor in _state_dict(getattr(model, part), f"{part}.", dtype).items()
    }
    _write_tensors(tensors, root, max_shard_bytes)
    tokenizer.save_pretrained(str(root))
    return root
