"""`ExportBackend`: the engine's `Backend` over an `nvila-core export` folder, whatever runs the graphs.

The host does what the graphs leave out, with the same helpers as the torch path: embedding
lookup and media splicing, dynamic-S2 feature merge, temporal pooling, the greedy loop over the
LLM graph's KV cache (arrays fed back as `past_key_values.*`), and the scoring of a closed answer
set (`Engine.choose`) over the same cache. A subclass only opens one session per graph: anything
with onnxruntime's `run(output_names, feed) -> arrays`; `OnnxRuntimeBackend` (the ONNX files
themselves, CPU deployment and CI) and `TensorRTBackend` (the engines `nvila-core build-engine`
built from those files) share everything else.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file

from nvila_core.export.exporter import load_metadata
from nvila_core.export.graphs import kv_names, llm_feed
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.generation import (
    AnswerTree,
    Decoded,
    Scored,
    check_continuable,
    check_continuations,
)
from nvila_core.model.modeling import MEDIA_KINDS, EncodedMedia, newline_token_id
from nvila_core.model.processing import MediaItem, ModelInputs
from nvila_core.model.prompting import IMAGE_TOKEN_INDEX
from nvila_core.model.temporal import TemporalPooler
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, load_tokenizer, media_token_ids
from nvila_core.model.vision import merge_blocks, merge_dynamic_s2
from nvila_core.runtime.prompt_prefix import PromptPrefixCache


class GraphSession(Protocol):
    """One exported graph, runnable: onnxruntime's InferenceSession has exactly this method."""

    def run(self, output_names: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class ExportBackend(ABC):
    """Vision, projector and LLM graphs of an export folder, one session each (`open_session`)."""

    name = "export"

    def __init__(self, export_dir: str | Path, device: torch.device | str = "cpu"):
        root = Path(export_dir)
        self.metadata = load_metadata(root)
        self.config = NVILAConfig.from_dict(self.metadata["model"])
        self.tokenizer = load_tokenizer(root / self.metadata["tokenizer"]["dir"])
        # Outputs come back as host arrays whatever device ran the graph.
        self.device = torch.device("cpu")
        self.sessions = {
            name: self.open_session(root, name, graph, torch.device(device))
            for name, graph in self.metadata["graphs"].items()
        }
        embeddings = self.metadata["embeddings"]
        self.embeddings = load_file(str(root / embeddings["file"]))[embeddings["key"]]
        self.dims = self.metadata["llm"]
        self._past_names = kv_names(self.dims["num_layers"], "past_key_values")
        self._output_names = ["logits", *kv_names(self.dims["num_layers"], "present")]
        self.prompt_prefix = PromptPrefixCache()
        self.temporal = TemporalPooler(self.config.video_pool_sizes)
        self.media_ids: set[int] = {IMAGE_TOKEN_INDEX}
        if self.config.architecture == "nvila":
            ids = media_token_ids(self.tokenizer)
            self.media_ids |= {ids[IMAGE_TOKEN], ids[VIDEO_TOKEN]}
        self.newline = None
        if self.config.appends_newline_embedding:
            self.newline = self.embeddings[newline_token_id(self.tokenizer)][None]

    @abstractmethod
    def open_session(
        self, root: Path, name: str, graph: dict[str, Any], device: torch.device
    ) -> GraphSession:
        """The session running graph `name` (its metadata entry `graph`) of export `root`."""

    # ---------------------------------------------------------------- vision
    def _vision(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        session = self.sessions["vision"]
        dtype = (
            np.float16 if self.metadata["graphs"]["vision"]["dtype"] == "float16" else np.float32
        )
        tokens, features = session.run(
            ["tokens", "features"], {"pixel_values": pixel_values.cpu().numpy().astype(dtype)}
        )
        return torch.from_numpy(tokens), torch.from_numpy(features)

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._vision(pixel_values)[0]

    def _image_blocks(self, item: MediaItem) -> list[torch.Tensor]:
        tokens, features = self._vision(item.pixel_values)
        if item.block_size is None:
            return list(tokens.unbind(0))
        merged = merge_dynamic_s2(features, item.block_size, self.config)
        (projected,) = self.sessions["projector"].run(["tokens"], {"features": merged.numpy()})
        return [merge_blocks(torch.from_numpy(projected), *item.block_size)]

    def _blocks(self, item: MediaItem, frame_tokens: torch.Tensor | None) -> list[torch.Tensor]:
        if item.kind == "image":
            return self._image_blocks(item)
        if item.kind not in MEDIA_KINDS:
            raise ValueError(f"unknown media kind {item.kind!r} (known: {', '.join(MEDIA_KINDS)})")
        if frame_tokens is None:
            frame_tokens = self.frame_features(item.pixel_values)
        if item.kind == "frame":
            return list(frame_tokens.unbind(0))
        return [frame for stream in self.temporal(frame_tokens) for frame in stream.unbind(0)]

    def encode_media(
        self, media: Sequence[MediaItem], frame_tokens: Sequence[torch.Tensor | None]
    ) -> EncodedMedia:
        embeds, visual_tokens, vit_passes = [], 0, 0
        for item, tokens in zip(media, frame_tokens, strict=True):
            if tokens is None or item.kind == "image":
                vit_passes += item.pixel_values.shape[0]
            blocks = self._blocks(item, tokens)
            visual_tokens += sum(b.shape[0] for b in blocks)
            embeds.append(self._join(blocks))
        return EncodedMedia(embeds, visual_tokens, vit_passes)

    def _join(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        dtype = self.embeddings.dtype
        if self.newline is None:
            return torch.cat([b.to(dtype) for b in blocks], dim=0)
        return torch.cat([p for b in blocks for p in (b.to(dtype), self.newline)], dim=0)

    # ---------------------------------------------------------------- LLM
    def _embed(self, input_ids: Sequence[int], media_embeds: Sequence[torch.Tensor]) -> np.ndarray:
        """[1, L, D]: text ids looked up, media positions replaced in order."""
        rows = self.embeddings.shape[0]
        pieces, embeds = [], iter(media_embeds)
        for token in input_ids:
            if token in self.media_ids:
                pieces.append(next(embeds).to(self.embeddings.dtype))
            elif 0 <= token < rows:
                pieces.append(self.embeddings[token][None])
            else:
                raise ValueError(f"token id {token} is outside the embedding ({rows} rows)")
        if next(embeds, None) is not None:
            raise ValueError("more media embeddings than media positions in the prompt")
        return torch.cat(pieces, dim=0)[None].numpy()

    def _empty_past(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        shape = (1, self.dims["num_key_value_heads"], 0, self.dims["head_dim"])
        return {name: np.zeros(shape, dtype=dtype) for name in self._past_names}

    def _reused_past(self, prompt: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        """The past of the positions `prompt` [1, L, D] shares with the last prompt (empty
        where none), and how many there are."""
        reused, kept = self.prompt_prefix.match(prompt[0])
        if not reused:
            return self._empty_past(prompt.dtype), 0
        return {name: np.ascontiguousarray(a[:, :, :reused]) for name, a in kept.items()}, reused

    def _keep_prompt(self, prompt: np.ndarray, past: dict[str, np.ndarray]) -> None:
        """Keep the prompt's own positions of `past` (session outputs, never written to)."""
        length = prompt.shape[1]
        self.prompt_prefix.keep(prompt[0], {name: a[:, :, :length] for name, a in past.items()})

    def _step(
        self, step_input: np.ndarray, past: dict[str, np.ndarray], length: int, **feed: Any
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """One LLM call on [1, new, D] after `length` cached positions (`feed`: `llm_feed`'s
        mask, positions, logits_index): the asked-for positions' logits [k, V] (the last one by
        default) and the new past. The arrays of `past` are not modified, so a past can be
        continued more than once."""
        logits, *present = self.sessions["llm"].run(
            self._output_names, llm_feed(step_input, length, past, **feed)
        )
        return (
            torch.from_numpy(logits[0]).float(),
            dict(zip(self._past_names, present, strict=True)),
        )

    def _check_media(self, inputs: ModelInputs, media_embeds: Sequence[torch.Tensor]) -> None:
        if len(media_embeds) != len(inputs.media):
            raise ValueError(f"{len(media_embeds)} media embeddings for {len(inputs.media)} items")

    def decode(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        stop_token_ids: Sequence[int],
        max_new_tokens: int,
        output_logits: bool,
    ) -> Decoded:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._check_media(inputs, media_embeds)
        prompt = self._embed(inputs.input_ids, media_embeds)
        past, reused = self._reused_past(prompt)
        step_input = prompt[:, reused:]
        stops = set(stop_token_ids)
        tokens: list[int] = []
        step_logits: list[torch.Tensor] = []
        stopped_by, prefill_ms, length = "max_new_tokens", 0.0, reused
        start = time.perf_counter()
        for step in range(max_new_tokens):
            logits, past = self._step(step_input, past, length)
            last = logits[-1]
            length += step_input.shape[1]
            token = int(torch.argmax(last))
            if step == 0:
                prefill_ms = (time.perf_counter() - start) * 1e3
                self._keep_prompt(prompt, past)
            if output_logits:
                step_logits.append(last)
            if token in stops:
                stopped_by = "stop_token"
                break
            tokens.append(token)
            step_input = self.embeddings[token][None, None].numpy()
        decode_ms = (time.perf_counter() - start) * 1e3 - prefill_ms
        return Decoded(
            token_ids=tokens,
            stopped_by=stopped_by,
            prefill_ms=prefill_ms,
            decode_ms=decode_ms,
            prompt_tokens=prompt.shape[1],
            logits=torch.stack(step_logits) if output_logits else None,
            cache=past,
            cached=length,
            reused_tokens=reused,
        )

    def score(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        """The prompt and the answers' prefix tree (`AnswerTree`) in one LLM call: the tree's
        nodes follow the prompt, each seeing the prompt and its own ancestors, and the call
        returns the logits of the prompt's last position and of every node."""
        check_continuations(continuations)
        self._check_media(inputs, media_embeds)
        prompt = self._embed(inputs.input_ids, media_embeds)
        past, reused = self._reused_past(prompt)
        scored, present = self._score_tree(prompt[:, reused:], past, reused, continuations)
        self._keep_prompt(prompt, present)
        scored.reused_tokens = reused
        return scored

    def score_after(
        self,
        decoded: Decoded,
        keep: int,
        ids: Sequence[int],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        check_continuations(continuations)
        check_continuable(decoded, keep, ids)
        length = decoded.prompt_tokens + keep
        past = {name: np.ascontiguousarray(a[:, :, :length]) for name, a in decoded.cache.items()}
        scored, _ = self._score_tree(self._embed(ids, []), past, length, continuations)
        return scored

    def _score_tree(
        self,
        prompt: np.ndarray,
        past: dict[str, np.ndarray],
        length: int,
        continuations: Sequence[Sequence[int]],
    ) -> tuple[Scored, dict[str, np.ndarray]]:
        """`score` of `prompt` [1, L, D] after `past` (`length` positions), one call; and the
        call's present (the past, the prompt, then the tree's nodes)."""
        tree = AnswerTree.build(continuations)
        new = prompt.shape[1]
        context = length + new
        mask = tree.call_mask(new, length)
        step_input = np.concatenate([prompt, self.embeddings[tree.tokens][None].numpy()], axis=1)
        start = time.perf_counter()
        logits, present = self._step(
            step_input.astype(prompt.dtype, copy=False),
            past,
            length,
            mask=mask,
            positions=[*range(length, context), *(context + d for d in tree.depths)],
            logits_index=range(new - 1, new + len(tree)),
        )
        logp = logits.log_softmax(-1)
        scores = tree.scores(continuations, logp[0], logp[1:] if len(tree) else None)
        prefill_ms = (time.perf_counter() - start) * 1e3
        scored = Scored(
            log_probs=scores, prefill_ms=prefill_ms, score_ms=0.0, prompt_tokens=context
        )
        return scored, present
