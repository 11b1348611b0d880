"""NVILAModel: vision tower + projector + LLM, and the splice of media embeddings into the prompt.

The module tree mirrors the "-hf" checkpoints (`llm.*`, `vision_tower.vision_model.*`,
`mm_projector.layers.*`), so a state dict loads without renaming. Splicing follows nvila.md §1.4 /
§4.3: only text ids below the embedding's row count are looked up (media ids are >= the row count
in real NVILA checkpoints, and -200 in VILA-1.5), and every media position is replaced, in prompt
order, by that item's embeddings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.image_processing import ProcessedImage
from nvila_core.model.language import build_llm, default_dtype, resolve_dtype
from nvila_core.model.projector import MultimodalProjector
from nvila_core.model.prompting import IMAGE_TOKEN_INDEX
from nvila_core.model.temporal import TemporalPooler
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, media_token_ids
from nvila_core.model.vision import VisionTower, encode_frames, encode_image
from nvila_core.transformers_compat import cache_argument

if TYPE_CHECKING:
    from nvila_core.model.processing import MediaItem

MEDIA_KINDS = ("image", "frame", "video")


@dataclass
class EncodedMedia:
    """Embeddings that replace each media position, and what producing them cost."""

    embeds: list[torch.Tensor]  # one [n_i, D] per MediaItem, "\n" embeddings included
    visual_tokens: int  # rows that came from the vision path ("\n" embeddings excluded)
    vit_passes: int  # tiles / frames run through the ViT
    cached_frames: int = 0  # frames whose features came from a cache instead of the ViT
    vision_ms: float = 0.0


def newline_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The single id of "\\n", whose embedding NVILA appends after every image / frame."""
    ids = tokenizer("\n", add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f'the tokenizer encodes "\\n" as {len(ids)} tokens {ids}; NVILA needs one')
    return int(ids[0])


class NVILAModel(nn.Module):
    """SigLIP vision tower, multimodal projector and causal LLM of one NVILA-family model."""

    def __init__(
        self,
        config: NVILAConfig,
        llm: PreTrainedModel,
        vision_tower: VisionTower,
        mm_projector: MultimodalProjector,
    ):
        super().__init__()
        self.config = config
        self.llm = llm
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector
        self.temporal = TemporalPooler(config.video_pool_sizes)
        # Which ids mark a media position; -200 is VILA-1.5's and is valid for any media kind.
        self.image_token_id: int | None = None
        self.video_token_id: int | None = None
        self.newline_token_id: int | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_config(
        cls,
        config: NVILAConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        seed: int | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        attn_implementation: str = "sdpa",
        init_weights: bool = True,
    ) -> NVILAModel:
        """A model for `config`: random weights (reproducible with `seed`) or, with
        `init_weights=False`, uninitialised memory that a checkpoint loader overwrites.

        `device="meta"` allocates nothing, for parameter counts.
        """
        torch_dtype = resolve_dtype(dtype, config)
        init = contextlib.nullcontext() if init_weights else no_init_weights()
        with torch.random.fork_rng(devices=[]), init:
            if seed is not None:
                torch.manual_seed(seed)
            llm = build_llm(config, device, torch_dtype, attn_implementation)
            with torch.device(device or "cpu"), default_dtype(torch_dtype):
                vision_tower = VisionTower(config)
                mm_projector = MultimodalProjector.from_config(config)
        model = cls(config, llm, vision_tower.eval(), mm_projector.eval())
        if tokenizer is not None:
            model.bind_tokenizer(tokenizer)
        return model

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Learn the media token ids and the "\\n" id of the tokenizer paired with this model.

        VILA-1.5 prompts mark media with -200 only, so their tokenizer's media tokens are ignored.
        """
        if self.config.architecture == "nvila":
            ids = media_token_ids(tokenizer)
            self.image_token_id = ids[IMAGE_TOKEN]
            self.video_token_id = ids[VIDEO_TOKEN]
        if self.config.appends_newline_embedding:
            self.newline_token_id = newline_token_id(tokenizer)

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    @property
    def vision_dtype(self) -> torch.dtype:
        return self.vision_tower.vision_model.embeddings.patch_embedding.weight.dtype

    @property
    def embedding_rows(self) -> int:
        """Rows of the LLM input embedding; ids at or above it are never looked up."""
        return self.llm.get_input_embeddings().num_embeddings

    def num_parameters(self) -> dict[str, int]:
        """Parameters per part and in total (tied embeddings counted once)."""

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "llm": count(self.llm),
            "vision_tower": count(self.vision_tower),
            "mm_projector": count(self.mm_projector),
            "total": count(self),
        }

    # ---------------------------------------------------------------- media encoding
    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[T, 3, S, S] -> [T, tokens_per_tile, D] projected tokens, one row per frame.

        Frames never interact here, so the engine caches these rows per frame.
        """
        pixels = pixel_values.to(self.device, self.vision_dtype)
        return encode_frames(self.vision_tower, self.mm_projector, pixels, self.config)

    def media_blocks(
        self, item: MediaItem, frame_tokens: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The token blocks of one media item, each later followed by a "\\n" embedding (NVILA).

        image: one block per `<image>` (dynamic-S2: one block for all tiles); frame: one block;
        video: one block per temporally pooled frame, stream after stream. `frame_tokens`
        ([T, tokens, D], e.g. from a cache) skips the vision tower for frames and videos.
        """
        if item.kind == "image":
            pixels = item.pixel_values.to(self.device, self.vision_dtype)
            num_blocks = 1 if item.block_size is not None else pixels.shape[0]
            processed = ProcessedImage(pixels, item.block_size, num_blocks)
            return encode_image(self.vision_tower, self.mm_projector, processed, self.config)
        if item.kind not in ("frame", "video"):
            raise ValueError(f"unknown media kind {item.kind!r} (known: {', '.join(MEDIA_KINDS)})")
        if frame_tokens is None:
            frame_tokens = self.frame_features(item.pixel_values)
        if frame_tokens.shape[0] != item.pixel_values.shape[0]:
            raise ValueError(
                f"{item.kind} item has {item.pixel_values.shape[0]} frames but "
                f"{frame_tokens.shape[0]} frame feature rows were given"
            )
        if item.kind == "frame":
            return list(frame_tokens.unbind(0))
        return [frame for stream in self.temporal(frame_tokens) for frame in stream.unbind(0)]

    def join_blocks(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """[sum n_b (+1 per block), D]: the blocks in order, each followed by "\\n" for NVILA."""
        dtype = self.dtype
        if not self.config.appends_newline_embedding:
            return torch.cat([b.to(dtype) for b in blocks], dim=0)
        newline = self._newline_embedding()
        return torch.cat([part for b in blocks for part in (b.to(dtype), newline)], dim=0)

    def encode_media(
        self, item: MediaItem, frame_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[n, D]: everything that replaces the item's media position in the prompt."""
        return self.join_blocks(self.media_blocks(item, frame_tokens))

    def encode_media_items(
        self,
        media: Sequence[MediaItem],
        frame_tokens: Sequence[torch.Tensor | None] | None = None,
        dedupe_frames: bool = False,
    ) -> EncodedMedia:
        """Embeddings of every item; the frames of all frame/video items lacking `frame_tokens`
        go through the vision tower in one batch. dedupe_frames: pixel-identical frames (the
        black padding of young episodes, a blank-frames ablation) pass through it once and share
        the result, gradients included; a training batch has many, inference has its cache."""
        given = list(frame_tokens) if frame_tokens is not None else [None] * len(media)
        if len(given) != len(media):
            raise ValueError(f"{len(given)} frame_tokens entries for {len(media)} media items")
        pending = [i for i, item in enumerate(media) if item.kind != "image" and given[i] is None]
        vit_passes = 0
        if pending:
            pixels = torch.cat([media[i].pixel_values for i in pending], dim=0)
            if dedupe_frames:
                unique, inverse = torch.unique(pixels.flatten(1), dim=0, return_inverse=True)
                features = self.frame_features(unique.view(-1, *pixels.shape[1:]))[inverse]
                vit_passes += unique.shape[0]
            else:
                features = self.frame_features(pixels)
                vit_passes += pixels.shape[0]
            sizes = [media[i].pixel_values.shape[0] for i in pending]
            for i, chunk in zip(pending, features.split(sizes, dim=0), strict=True):
                given[i] = chunk
        embeds, visual_tokens = [], 0
        for item, tokens in zip(media, given, strict=True):
            blocks = self.media_blocks(item, tokens)
            if item.kind == "image":
                vit_passes += item.pixel_values.shape[0]
            visual_tokens += sum(b.shape[0] for b in blocks)
            embeds.append(self.join_blocks(blocks))
        return EncodedMedia(embeds, visual_tokens, vit_passes)

    def _newline_embedding(self) -> torch.Tensor:
        if self.newline_token_id is None:
            raise ValueError(
                'this NVILA model appends the "\\n" embedding after each image but knows no '
                "tokenizer; call bind_tokenizer(tokenizer) first"
            )
        return self.llm.get_input_embeddings().weight[self.newline_token_id][None]

    # ---------------------------------------------------------------- splicing
    def media_positions(self, input_ids: Sequence[int], media: Sequence[MediaItem]) -> list[int]:
        """Positions of the media tokens, checked against the items' kinds, in prompt order."""
        rows = self.embedding_rows
        positions = []
        for pos, token in enumerate(input_ids):
            if token in (IMAGE_TOKEN_INDEX, self.image_token_id, self.video_token_id):
                positions.append(pos)
            elif not 0 <= token < rows:
                raise ValueError(
                    f"token id {token} at position {pos} is outside the LLM embedding ({rows} "
                    "rows) and is not a media token"
                )
        if len(positions) != len(media):
            raise ValueError(
                f"the prompt has {len(positions)} media tokens but {len(media)} media items were "
                f"given (kinds: {[m.kind for m in media]})"
            )
        for n, (pos, item) in enumerate(zip(positions, media, strict=True)):
            token = input_ids[pos]
            wanted = {self.image_token_id: ("image", "frame"), self.video_token_id: ("video",)}
            allowed = MEDIA_KINDS if token == IMAGE_TOKEN_INDEX else wanted[token]
            if item.kind not in allowed:
                raise ValueError(
                    f"media token {token} at position {pos} expects {' or '.join(allowed)}, but "
                    f"media item {n} is a {item.kind!r}"
                )
        return positions

    def embed_inputs(
        self,
        input_ids: Sequence[int],
        media: Sequence[MediaItem] = (),
        media_embeds: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """[1, L, D] LLM input embeddings: text ids looked up, each media position replaced by
        its item's embeddings (`media_embeds` when given, else encoded now)."""
        positions = self.media_positions(input_ids, media)
        if media_embeds is None:
            media_embeds = self.encode_media_items(media).embeds
        if len(media_embeds) != len(media):
            raise ValueError(f"{len(media_embeds)} media embeddings for {len(media)} media items")
        embedding = self.llm.get_input_embeddings()
        ids = torch.tensor([int(t) for t in input_ids], dtype=torch.long, device=self.device)
        pieces, start = [], 0
        for pos, embeds in zip(positions, media_embeds, strict=True):
            pieces.append(embedding(ids[start:pos]))
            pieces.append(embeds.to(self.device, self.dtype))
            start = pos + 1
        pieces.append(embedding(ids[start:]))
        return torch.cat(pieces, dim=0)[None]

    # ---------------------------------------------------------------- LLM
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        past_key_values=None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ):
        """The LLM on spliced embeddings; `past_key_values` is a `DynamicCache` filled in place."""
        return self.llm(
            inputs_embeds=inputs_embeds,
            **cache_argument(past_key_values),
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
