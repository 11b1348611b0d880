"""Prompt + pixels -> `ModelInputs`: token ids with one position per media item, and the items.

See docs/nvila_core_contract.md ("Media contract"). Media kinds:
- "image": a user image. An image that is the prompt's only `<image>` follows
  `config.image_aspect_ratio` (dynamic-S2 tiles + block_size, or NVILA-Lite tiles that each
  become their own `<image>\\n`); next to other images or frames every image is a single resized
  tile (nvila.md §2.2, §3.4);
- "frame": one history/video frame shown as its own `<image>` (NaVILA navigation);
- "video": the frames behind one `<vila/video>` token, temporally pooled by the model.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.image_processing import ImageLike, ImageProcessor
from nvila_core.model.prompting import (
    DEFAULT_SYSTEM,
    IMAGE_TOKEN_INDEX,
    ChatFormat,
    SystemPrompt,
    black_like,
    compact_navigation_prompt,
    merge_action_runs,
    navigation_answer,
    navigation_prompt,
    normalize_instruction,
    sample_history_indices,
    sample_recent_indices,
    tokenize_prompt,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, media_token_ids

_PLACEHOLDER = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)})")


@dataclass
class MediaItem:
    kind: str  # "image" | "frame" | "video"
    pixel_values: torch.Tensor  # image: [N,3,S,S] tiles; frame: [1,3,S,S]; video: [T,3,S,S]
    block_size: tuple[int, int] | None = None  # (rows, cols) for a dynamic-S2 image, else None
    keys: list[Hashable] | None = (
        None  # per-frame cache keys for "frame"/"video" (None = no caching)
    )


@dataclass
class ModelInputs:
    input_ids: list[int]  # media positions hold the media token id ("nvila") or -200 ("vila1.5")
    media: list[MediaItem]  # in prompt order, exactly one per media position
    prompt_text: str = ""  # the full templated prompt, for logging


class NVILAProcessor:
    """Builds model inputs for one model configuration and its tokenizer."""

    def __init__(self, config: NVILAConfig, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = ImageProcessor(config)
        self.chat = ChatFormat(tokenizer, config.chat_template)
        self._media_ids = media_token_ids(tokenizer) if config.architecture == "nvila" else None

    def __call__(
        self,
        prompt: str,
        images: Sequence[ImageLike] = (),
        frames: Sequence[ImageLike] = (),
        frame_keys: Sequence[Hashable] | None = None,
        video: Sequence[ImageLike] = (),
        video_keys: Sequence[Hashable] | None = None,
        chat: bool = True,
        system: SystemPrompt = DEFAULT_SYSTEM,
    ) -> ModelInputs:
        """Token ids and media for `prompt`.

        The prompt's `<image>` placeholders take, in order, first every one of `images` and then
        every one of `frames`; its only `<vila/video>` takes `video`. A prompt without any
        placeholder gets the media in front of the text (NVILA's layout, nvila.md §3.3).
        `frame_keys` / `video_keys` (one per frame, None = uncached) become `MediaItem.keys`.
        With `chat` the text is wrapped in the model's chat template (`self.chat`: the
        checkpoint's own template when its lineage renders with it, else the built-in one;
        `system` as in `ChatFormat.apply`).
        """
        images, frames, video = list(images), list(frames), list(video)
        if frame_keys is not None and len(frame_keys) != len(frames):
            raise ValueError(f"got {len(frame_keys)} frame_keys for {len(frames)} frames")
        if video_keys is not None and len(video_keys) != len(video):
            raise ValueError(f"got {len(video_keys)} video_keys for {len(video)} video frames")
        if video and self.config.architecture == "vila1.5":
            raise ValueError("VILA-1.5 models (NaVILA) take no video; pass the frames as frames")
        prompt = self._place_media(prompt, len(images) + len(frames), bool(video))

        queue = self._image_items(images, alone=not frames)
        queue += self._frame_items(frames, frame_keys)
        media: list[MediaItem] = []
        text = []
        for part in _PLACEHOLDER.split(prompt):
            if part == IMAGE_TOKEN:
                items, placeholder = queue.pop(0)
                media += items
                text.append(placeholder)
            elif part == VIDEO_TOKEN:
                pixels = self.image_processor.process_frames(video)
                keys = None if video_keys is None else list(video_keys)
                media.append(MediaItem("video", pixels, keys=keys))
                text.append(part)
            else:
                text.append(part)
        user = "".join(text)
        full = self.chat.apply(user, system) if chat else user
        ids = tokenize_prompt(self.tokenizer, full, self.config.architecture)
        self._check_positions(ids, media)
        return ModelInputs(input_ids=ids, media=media, prompt_text=full)

    def navigation(
        self,
        instruction: str,
        frames: Sequence[ImageLike],
        frame_keys: Sequence[Hashable] | None = None,
        num_frames: int | None = None,
        previous_actions: Sequence[str] | None = None,
    ) -> ModelInputs:
        """A navigation query in the model's format (`config.nav_history`, `config.nav_prompt`).

        "navila" history: `frames` is every frame since the instruction was given, oldest first,
        and `num_frames` are sampled over the whole episode (NaVILA). "recent" history: `frames`
        holds one frame per decision so far (the current one last); the first and the latest
        are shown (`sample_recent_indices`). Black frames pad a short history and carry no cache
        key. `previous_actions` are the executed action phrases, oldest first; the compact
        prompt states the latest `config.nav_previous_actions` of them.
        """
        num_frames = num_frames or self.config.num_video_frames
        if frame_keys is not None and len(frame_keys) != len(frames):
            raise ValueError(f"got {len(frame_keys)} frame_keys for {len(frames)} frames")
        if self.config.nav_history == "recent":
            indices = sample_recent_indices(len(frames), num_frames)
        else:
            indices = sample_history_indices(len(frames), num_frames)
        pad = black_like(frames[-1]) if None in indices else None
        sampled = [pad if i is None else frames[i] for i in indices]
        keys = None
        if frame_keys is not None:
            keys = [None if i is None else frame_keys[i] for i in indices]
        prompt = self.navigation_text(instruction, num_frames, previous_actions)
        return self(prompt, frames=sampled, frame_keys=keys)

    def navigation_text(
        self, instruction: str, num_frames: int, previous_actions: Sequence[str] | None = None
    ) -> str:
        """The user text of a navigation query with `num_frames` `<image>` placeholders."""
        instruction = normalize_instruction(instruction)
        if self.config.nav_prompt == "compact":
            shown = None
            if self.config.nav_previous_actions > 0:
                done = list(previous_actions or [])
                if self.config.nav_merge_actions:
                    done = merge_action_runs(done)
                shown = done[-self.config.nav_previous_actions :]
            return compact_navigation_prompt(instruction, num_frames, shown)
        return navigation_prompt(instruction, num_frames)

    def navigation_answer(self, action_text: str) -> str:
        """The answer this model gives for an action phrase, e.g. "move forward 75 cm"."""
        return navigation_answer(action_text, self.config.nav_prompt)

    def answer_ids(self, answer: str) -> list[int]:
        """Ids of `answer` and its end token as they follow the generation prompt: the training
        target of a sample, and what `Engine.choose` scores for each candidate answer."""
        prompt = self.chat.apply("?")
        full = self.chat.apply("?", assistant=answer)
        if not full.startswith(prompt):
            raise ValueError(
                f"{self.chat.source} chat template {self.chat.template!r}: the answer does not "
                "extend the prompt"
            )
        ids = self.tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids
        stops = set(self.stop_token_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), None)
        if end is None:
            raise ValueError(f"the answer {answer!r} has no end token")
        return list(ids[: end + 1])

    @property
    def stop_token_ids(self) -> list[int]:
        """The ids that end an answer (`ChatFormat.stop_token_ids`): end-of-turn, then eos."""
        return self.chat.stop_token_ids()

    def decode(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Generated text without special tokens (and without -200 placeholders), stripped."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        ids = [int(t) for t in token_ids if int(t) >= 0]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _place_media(prompt: str, num_visual: int, has_video: bool) -> str:
        """The prompt with its placeholders checked against the media, or media put in front."""
        n_image, n_video = prompt.count(IMAGE_TOKEN), prompt.count(VIDEO_TOKEN)
        if n_video > 1:
            raise ValueError(f"a prompt takes at most one {VIDEO_TOKEN}, got {n_video}")
        if n_image == 0 and n_video == 0:
            return IMAGE_TOKEN * num_visual + (VIDEO_TOKEN if has_video else "") + prompt
        if n_image != num_visual or n_video != int(has_video):
            raise ValueError(
                f"the prompt has {n_image} {IMAGE_TOKEN} and {n_video} {VIDEO_TOKEN} "
                f"placeholders, but {num_visual} images/frames and {int(has_video)} video were "
                "given"
            )
        return prompt

    def _image_items(
        self, images: list[ImageLike], alone: bool
    ) -> list[tuple[list[MediaItem], str]]:
        """Per image, its items and the text its `<image>` placeholder becomes.

        Only an image that is the prompt's one `<image>` (`alone`: no other images or frames) is
        tiled by `config.image_aspect_ratio`; otherwise every image is one resized tile.
        """
        if len(images) != 1 or not alone:
            tiles = self.image_processor.process_frames(images) if images else []
            return [([MediaItem("image", tile[None])], IMAGE_TOKEN) for tile in tiles]
        processed = self.image_processor.process_image(images[0])
        if self.config.image_aspect_ratio == "dynamic":
            # NVILA-Lite: every tile (and the thumbnail) is its own "<image>\n" (nvila.md §2.4).
            items = [MediaItem("image", tile[None]) for tile in processed.pixel_values]
            return [(items, f"{IMAGE_TOKEN}\n" * len(items))]
        item = MediaItem("image", processed.pixel_values, processed.block_size)
        return [([item], IMAGE_TOKEN)]

    def _frame_items(
        self, frames: list[ImageLike], keys: Sequence[Hashable] | None
    ) -> list[tuple[list[MediaItem], str]]:
        """One single-tile "frame" item per frame, keyed for the engine's per-frame cache."""
        if not frames:
            return []
        tiles = self.image_processor.process_frames(frames)
        keys = [None] * len(frames) if keys is None else list(keys)
        return [
            ([MediaItem("frame", tile[None], keys=None if key is None else [key])], IMAGE_TOKEN)
            for tile, key in zip(tiles, keys, strict=True)
        ]

    def _check_positions(self, ids: list[int], media: list[MediaItem]) -> None:
        """Every media item has its own position, in order (catches `<image>` in a system text)."""
        if self._media_ids is None:
            found = [i for i in ids if i == IMAGE_TOKEN_INDEX]
            expected = [IMAGE_TOKEN_INDEX] * len(media)
        else:
            image_id, video_id = self._media_ids[IMAGE_TOKEN], self._media_ids[VIDEO_TOKEN]
            found = [i for i in ids if i in (image_id, video_id)]
            expected = [video_id if m.kind == "video" else image_id for m in media]
        if found != expected:
            raise ValueError(
                f"the tokenized prompt has {len(found)} media positions for {len(media)} media "
                "items; media placeholders must appear only in the prompt, once per item"
            )
