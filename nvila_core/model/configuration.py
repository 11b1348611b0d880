"""NVILAConfig: one description of every NVILA / NaVILA variant, as data.

The same fields drive the tiny test model, NVILA-8B and NaVILA-8B, so there is one code path for
all of them. Presets live in `config/models/<name>.yaml`; real checkpoints are read from their
top-level VILA `config.json` (`llava_llama`) or the single-folder "-hf" config (`nvila`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

IMAGE_MODES = ("resize", "dynamic_s2", "dynamic")
PROJECTOR_TYPES = ("mlp_downsample", "mlp_downsample_2x2_fix", "mlp_downsample_3x3_fix")
# Order of the projector's merged tokens: "auto" follows the architecture's lineage
# (LINEAGE_TOKEN_ORDERS).
TOKEN_ORDERS = ("row_major", "column_major")
LINEAGE_TOKEN_ORDERS = {"nvila": "row_major", "vila1.5": "column_major"}
CHAT_TEMPLATES = ("qwen2", "llama_3")
ARCHITECTURES = ("nvila", "vila1.5")
NAV_PROMPTS = ("navila", "compact")
NAV_HISTORIES = ("navila", "recent")
NAV_VERDICTS = ("model", "names")
NAV_INITIAL_TURNS = ("model", "stated")
LLM_TYPES = ("qwen2", "llama")


class ConfigError(ValueError):
    """A model configuration that cannot describe a working model."""


@dataclass
class NVILAConfig:
    """Architecture and pre/post-processing of one NVILA-family model.

    `architecture` selects the media splicing convention: "nvila" (media token ids, one "\\n"
    embedding appended per image/frame) or "vila1.5" (NaVILA: -200 placeholder, no "\\n").
    """

    name: str = "custom"
    architecture: str = "nvila"
    llm_config: dict[str, Any] = field(default_factory=dict)
    vision_config: dict[str, Any] = field(default_factory=dict)
    mm_projector_type: str = "mlp_downsample"
    projector_token_order: str = "auto"
    """Order of the tokens the projector's k x k merge emits per tile: "row_major" (NVILA's
    VILA code), "column_major" (the VILA-1.5 code NaVILA-8B was trained with) or "auto", the
    order of the architecture's lineage (nvila: row_major, vila1.5: column_major). A checkpoint
    trained with one order sees its images scrambled in the other."""
    mm_vision_select_layer: int = -2
    image_aspect_ratio: str = "dynamic_s2"
    s2_scales: list[int] = field(default_factory=lambda: [448, 896, 1344])
    s2_resize_output_to_scale_idx: int = -1
    min_tiles: int = 1
    max_tiles: int = 12
    num_video_frames: int = 8
    video_pool_sizes: list[list[int]] = field(default_factory=lambda: [[1, 1, 1]])
    chat_template: str = "qwen2"
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    model_max_length: int = 4096
    torch_dtype: str = "float32"
    nav_prompt: str = "navila"
    """Navigation query text: "navila" (NaVILA's prompt and answer sentence, verbatim) or
    "compact" (frames, instruction and previous actions in a few tokens; the answer is the bare
    action phrase). Real NaVILA checkpoints keep "navila"."""
    nav_history: str = "navila"
    """Which frames a navigation query shows: "navila" (history spread over the whole episode,
    then the current frame) or "recent" (the first frame, the frames of the latest decisions,
    then the current one: the frames passed are one per decision)."""
    nav_previous_actions: int = 0
    """How many of the latest executed actions the compact prompt states (0: none)."""
    nav_merge_actions: bool = False
    """Whether the compact prompt sums consecutive executed actions of one kind into runs
    ("turn right 135 degrees", "move forward 150 cm") before taking the latest
    `nav_previous_actions`: a run tells how far a turn or a walk has gone, which single steps
    cannot once the run is longer than the window."""
    nav_statement: bool = False
    """Whether a navigation answer first states what the episode data gives each step (one or
    more sentences, each ending in "."), then the action phrase. navila-nano's statement says
    what is close ahead and whether it is the landmark the instruction stops at ("Close ahead:
    the pink shelf. Is the blue potted plant close ahead? No. move forward 75 cm"): the stop
    then follows a comparison of two names written out (see `nav_verdict`) instead of a name
    compared with pixels, which a small model does not learn. The engine generates the
    statement, then chooses the action after it."""
    nav_verdict: str = "model"
    """Who gives the "Yes."/"No." that ends a `nav_statement` model's statement: "model" (what it
    generated) or "names" (the engine: "Yes." exactly when the landmark the statement says is
    close ahead and the one it asks about are written the same, `prompting.names_verdict`). A
    small model trained from scratch learns to name what is in front and to write the goal's
    name, but not to compare two names; with "names" the comparison is exact and the action is
    chosen after the corrected statement."""
    nav_initial_turn: str = "model"
    """How a navigation policy takes the turn an instruction opens with ("Turn around to your
    left."): "model" (as the model decides) or "stated" (kept on the stated side and within the
    stated range until the first move, `nvila_nav.initial_turn`). Read by the policy, not the
    engine; real NaVILA checkpoints keep "model"."""

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- derived quantities
    @property
    def llm_type(self) -> str:
        return str(self.llm_config.get("model_type", "qwen2"))

    @property
    def llm_hidden_size(self) -> int:
        return int(self.llm_config["hidden_size"])

    @property
    def vision_hidden_size(self) -> int:
        return int(self.vision_config["hidden_size"])

    @property
    def tile_size(self) -> int:
        """Side of one square ViT input tile in pixels (448 for NVILA, 384 for NaVILA)."""
        return int(self.vision_config["image_size"])

    @property
    def patch_grid(self) -> int:
        """Patches per tile side: 448/14 = 32, 384/14 = 27."""
        return self.tile_size // int(self.vision_config["patch_size"])

    @property
    def num_scales(self) -> int:
        return len(self.s2_scales) if self.image_aspect_ratio == "dynamic_s2" else 1

    @property
    def mm_hidden_size(self) -> int:
        """Channels entering the projector: the ViT width times the number of S2 scales."""
        return self.vision_hidden_size * self.num_scales

    @property
    def token_order(self) -> str:
        """The projector's token order, "auto" resolved by the lineage (`projector_token_order`)."""
        if self.projector_token_order == "auto":
            return LINEAGE_TOKEN_ORDERS[self.architecture]
        return self.projector_token_order

    @property
    def downsample_rate(self) -> int:
        return 3 if self.mm_projector_type == "mlp_downsample_3x3_fix" else 2

    @property
    def tokens_per_tile(self) -> int:
        """Projected tokens of one tile: ceil(grid/k)^2 (32 -> 256, 27 -> 196, 32 with 3x3 -> 121)."""
        side = -(-self.patch_grid // self.downsample_rate)
        return side * side

    @property
    def appends_newline_embedding(self) -> bool:
        return self.architecture == "nvila"

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"model config {self.name!r}: {message}")

        check(self.architecture in ARCHITECTURES, f"architecture must be one of {ARCHITECTURES}")
        check(
            self.mm_projector_type in PROJECTOR_TYPES,
            f"unknown projector type {self.mm_projector_type!r} (known: {', '.join(PROJECTOR_TYPES)})",
        )
        check(
            self.image_aspect_ratio in IMAGE_MODES,
            f"image_aspect_ratio must be one of {IMAGE_MODES}, got {self.image_aspect_ratio!r}",
        )
        check(
            self.chat_template in CHAT_TEMPLATES, f"chat_template must be one of {CHAT_TEMPLATES}"
        )
        check(self.llm_type in LLM_TYPES, f"llm model_type must be one of {LLM_TYPES}")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            check(key in self.llm_config, f"llm_config lacks {key!r}")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size"):
            check(key in self.vision_config, f"vision_config lacks {key!r}")
        check("patch_size" in self.vision_config, "vision_config lacks 'patch_size'")
        n_layers = int(self.vision_config["num_hidden_layers"])
        check(
            -n_layers <= self.mm_vision_select_layer < n_layers + 1
            and self.mm_vision_select_layer != 0,
            f"mm_vision_select_layer {self.mm_vision_select_layer} out of range for {n_layers} layers",
        )
        if self.image_aspect_ratio == "dynamic_s2":
            check(
                len(self.s2_scales) >= 1 and self.s2_scales[0] == self.tile_size,
                f"s2_scales {self.s2_scales} must start at the tile size {self.tile_size}",
            )
            check(
                all(s % self.tile_size == 0 for s in self.s2_scales)
                and self.s2_scales == sorted(self.s2_scales),
                f"s2_scales {self.s2_scales} must be ascending multiples of {self.tile_size}",
            )
        check(1 <= self.min_tiles <= self.max_tiles, "need 1 <= min_tiles <= max_tiles")
        if self.image_aspect_ratio == "dynamic_s2":
            fewest = (self.s2_scales[-1] // self.s2_scales[0]) ** 2
            check(
                self.max_tiles >= fewest,
                f"max_tiles {self.max_tiles} < {fewest}: dynamic-S2's last scale needs at least "
                f"(s2_scales[-1] / s2_scales[0])^2 tiles",
            )
        check(
            self.projector_token_order in ("auto", *TOKEN_ORDERS),
            f"projector_token_order must be auto or one of {TOKEN_ORDERS}, got "
            f"{self.projector_token_order!r}",
        )
        check(
            self.token_order == "row_major" or self.image_aspect_ratio != "dynamic_s2",
            "dynamic_s2 lays each block's tokens out row-major: it needs projector_token_order "
            "row_major",
        )
        check(self.nav_prompt in NAV_PROMPTS, f"nav_prompt must be one of {NAV_PROMPTS}")
        check(self.nav_history in NAV_HISTORIES, f"nav_history must be one of {NAV_HISTORIES}")
        check(
            self.nav_previous_actions == 0 or self.nav_prompt == "compact",
            "nav_previous_actions needs nav_prompt: compact (NaVILA's prompt has no place for them)",
        )
        check(self.nav_previous_actions >= 0, "nav_previous_actions must be >= 0")
        check(
            not self.nav_merge_actions or self.nav_previous_actions > 0,
            "nav_merge_actions needs nav_previous_actions > 0 (the runs the prompt states)",
        )
        check(
            not self.nav_statement or self.nav_prompt == "compact",
            "nav_statement needs nav_prompt: compact (NaVILA's answer is one sentence)",
        )
        check(self.nav_verdict in NAV_VERDICTS, f"nav_verdict must be one of {NAV_VERDICTS}")
        check(
            self.nav_verdict == "model" or self.nav_statement,
            "nav_verdict: names needs nav_statement (the statement whose names it compares)",
        )
        check(
            self.nav_initial_turn in NAV_INITIAL_TURNS,
            f"nav_initial_turn must be one of {NAV_INITIAL_TURNS}",
        )
        check(
            self.nav_history == "navila" or self.num_video_frames >= 2,
            "nav_history: recent needs num_video_frames >= 2 (first + current)",
        )
        check(
            all(len(p) == 3 and all(int(v) >= 1 for v in p) for p in self.video_pool_sizes)
            and len(self.video_pool_sizes) >= 1,
            f"video_pool_sizes must be a list of [t, h, w] >= 1, got {self.video_pool_sizes}",
        )

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NVILAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> NVILAConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read model config {path}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data.setdefault("name", path.stem)
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str) -> NVILAConfig:
        """A named preset from config/models (nvila-8b, nvila-lite-2b, navila-8b, tiny, ...)."""
        path = models_config_dir() / f"{name}.yaml"
        if not path.is_file():
            available = ", ".join(list_presets()) or "none found"
            raise ConfigError(f"no model preset {name!r} in {path.parent} (available: {available})")
        return cls.from_yaml(path)

    # -------- VILA checkpoint config.json (llava_llama) --------
    @classmethod
    def from_vila_config(
        cls,
        data: dict[str, Any],
        llm_config: dict[str, Any] | None = None,
        vision_config: dict[str, Any] | None = None,
        name: str = "checkpoint",
    ) -> NVILAConfig:
        """Read a VILA/NVILA/NaVILA top-level `config.json`.

        `llm_config` / `vision_config` are the sub-folder configs when present on disk; they
        win over the copies embedded in the top-level file (`llm_cfg`, `vision_tower_cfg`).
        """
        llm = dict(llm_config or data.get("llm_cfg") or {})
        vision = dict(vision_config or data.get("vision_tower_cfg") or {})
        if not llm:
            raise ConfigError(f"{name}: no LLM config (llm/config.json or llm_cfg)")
        if not vision:
            raise ConfigError(f"{name}: no vision tower config (vision_tower/config.json)")
        max_length = data.get("model_max_length") or llm.get("model_max_length") or 4096
        llm = {k: v for k, v in llm.items() if k in _LLM_KEYS | {"model_type"}}
        llm["model_type"] = (
            "llama" if "llama" in str(llm.get("model_type", "")).lower() else "qwen2"
        )
        vision = {k: v for k, v in vision.get("vision_config", vision).items() if k in _VISION_KEYS}
        projector = data.get("mm_projector_cfg") or {}
        projector_type = (
            projector.get("mm_projector_type")
            if isinstance(projector, dict)
            else data.get("mm_projector_type")
        ) or data.get("mm_projector_type", "mlp_downsample")
        mode = data.get("image_aspect_ratio", "resize")
        if mode not in IMAGE_MODES:
            mode = "dynamic_s2" if data.get("dynamic_s2") else "resize"
        scales = data.get("s2_scales", "448,896,1344")
        if isinstance(scales, str):
            scales = [int(s) for s in scales.split(",") if s.strip()]
        pool = [[1, 1, 1]]
        encoder = data.get("video_encoder")
        if isinstance(encoder, str) and encoder.strip():
            try:
                encoder = json.loads(encoder)
            except json.JSONDecodeError:
                encoder = {}
        if isinstance(encoder, dict) and "pool_sizes" in encoder:
            pool = [[int(v) for v in p] for p in encoder["pool_sizes"]]
        is_llama = llm["model_type"] == "llama"
        return cls(
            name=name,
            architecture="vila1.5" if is_llama else "nvila",
            llm_config=llm,
            vision_config=vision,
            mm_projector_type=projector_type,
            mm_vision_select_layer=int(data.get("mm_vision_select_layer", -2)),
            image_aspect_ratio=mode,
            s2_scales=list(scales) if mode == "dynamic_s2" else [int(vision["image_size"])],
            s2_resize_output_to_scale_idx=int(data.get("s2_resize_output_to_scale_idx", -1)),
            min_tiles=int(data.get("min_tiles", 1)),
            max_tiles=int(data.get("max_tiles", 12)),
            num_video_frames=int(data.get("num_video_frames", 8)),
            video_pool_sizes=pool,
            chat_template="llama_3" if is_llama else "qwen2",
            model_max_length=int(max_length),
            torch_dtype=str(data.get("model_dtype", "torch.float32")).removeprefix("torch."),
        )

    def to_vila_config(self) -> dict[str, Any]:
        """The top-level `config.json` of the VILA split layout (`llava_llama`)."""
        encoder = {"_target_": "llava.model.encoders.TSPVideoEncoder"}
        encoder["pool_sizes"] = self.video_pool_sizes
        return {
            "architectures": ["LlavaLlamaModel"],
            "model_type": "llava_llama",
            "hidden_size": self.llm_hidden_size,
            "mm_hidden_size": self.mm_hidden_size,
            "image_aspect_ratio": self.image_aspect_ratio,
            "dynamic_s2": self.image_aspect_ratio == "dynamic_s2",
            "s2_scales": ",".join(str(s) for s in self.s2_scales),
            "s2_max_split_size": self.tile_size,
            "s2_resize_output_to_scale_idx": self.s2_resize_output_to_scale_idx,
            "mm_vision_select_layer": self.mm_vision_select_layer,
            "mm_vision_select_feature": "cls_patch",
            "mm_projector_type": self.mm_projector_type,
            "min_tiles": self.min_tiles,
            "max_tiles": self.max_tiles,
            "num_video_frames": self.num_video_frames,
            "video_encoder": json.dumps(encoder),
            "model_max_length": self.model_max_length,
            "model_dtype": f"torch.{self.torch_dtype}",
            "llm_cfg": dict(self.llm_config),
            "vision_tower_cfg": {"model_type": "siglip_vision_model", **self.vision_config},
            "mm_projector_cfg": {
                "model_type": "v2l_projector",
                "mm_projector_type": self.mm_projector_type,
            },
            "nvila_core": {
                "name": self.name,
                "architecture": self.architecture,
                "chat_template": self.chat_template,
                "projector_token_order": self.projector_token_order,
                "nav_prompt": self.nav_prompt,
                "nav_history": self.nav_history,
                "nav_previous_actions": self.nav_previous_actions,
                "nav_merge_actions": self.nav_merge_actions,
                "nav_statement": self.nav_statement,
                "nav_verdict": self.nav_verdict,
                "nav_initial_turn": self.nav_initial_turn,
            },
        }


_LLM_KEYS = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "attention_bias",
    "head_dim",
}
_VISION_KEYS = {
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
}


def models_config_dir() -> Path:
    """Where the model presets live: $NVILA_NAV_CONFIG_DIR, the source tree, or the ROS share dir."""
    candidates = []
    if env := os.environ.get("NVILA_NAV_CONFIG_DIR"):
        candidates.append(Path(env) / "models")
    candidates.append(Path(__file__).resolve().parents[2] / "config" / "models")
    candidates.append(Path(sys.prefix) / "share" / "nvila_nav" / "config" / "models")
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "nvila_nav" / "config" / "models")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def list_presets() -> list[str]:
    directory = models_config_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
