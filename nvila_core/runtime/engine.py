"""Engine: the one inference API the robot calls, over a swappable execution backend.

The robot calls `navigate` every step with the episode's frame history. NaVILA shows 8 frames, 7
of which it has already seen, and frames never interact before the LLM, so the engine keeps each
frame's projected tokens in a bounded LRU cache (`FrameFeatureCache`) and runs the vision tower on
new frames only. Backends ("torch", or "onnxruntime" / "tensorrt" over an export folder) do the
tensor work behind a small `Backend` protocol.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from nvila_core.model.checkpoint import load_checkpoint
from nvila_core.model.configuration import ConfigError, NVILAConfig, list_presets
from nvila_core.model.frame_head import FrameHead, load_heads
from nvila_core.model.generation import (
    Decoded,
    GenerationResult,
    Scored,
    check_continuable,
    greedy_decode,
    make_result,
    score_continuations,
    synchronize,
)
from nvila_core.model.image_processing import ImageLike
from nvila_core.model.modeling import EncodedMedia, NVILAModel
from nvila_core.model.processing import MediaItem, ModelInputs, NVILAProcessor
from nvila_core.model.prompting import (
    STATEMENT_OPENING,
    names_verdict,
    statement_of,
    stop_token_ids,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN, build_tokenizer
from nvila_core.runtime.prompt_prefix import PromptPrefixCache

log = logging.getLogger(__name__)

DEFAULT_CACHE_FRAMES = 128


# ---------------------------------------------------------------- per-frame feature cache
def content_key(pixel_values: torch.Tensor) -> Hashable:
    """A cache key from a frame's pixels: blake2b of the bytes, plus shape and dtype."""
    pixels = pixel_values.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(pixels.numpy().data, digest_size=16).hexdigest()
    return ("blake2b", tuple(pixels.shape), str(pixels.dtype), digest)


class FrameFeatureCache:
    """Bounded LRU of projected per-frame tokens ([tokens_per_tile, D], before "\\n" and pooling).

    Size it above the episode length (in frames) for a perfect hit rate: NaVILA keeps sampling old
    frames of the whole episode. `max_frames=0` disables caching.
    """

    def __init__(self, max_frames: int = DEFAULT_CACHE_FRAMES):
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        self.max_frames = max_frames
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_frames > 0

    def get(self, key: Hashable) -> torch.Tensor | None:
        features = self._entries.get(key)
        if features is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return features

    def put(self, key: Hashable, features: torch.Tensor) -> None:
        if not self.enabled:
            return
        self._entries[key] = features
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_frames:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def info(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": len(self._entries),
            "max_frames": self.max_frames,
        }


STATEMENT_MAX_TOKENS = 48
"""Tokens a `nav_statement` model may spend on its statement, on top of its action's: navila-nano's
"Close ahead: the purple potted plant. Is the orange bookshelf close ahead? No." takes about 25."""


# ---------------------------------------------------------------- backends
class Backend(Protocol):
    """What the engine needs from an execution backend (PyTorch, ONNX Runtime, TensorRT, ...)."""

    name: str
    device: torch.device
    prompt_prefix: PromptPrefixCache
    """The last prompt's KV cache: `decode` and `score` prefill a new prompt only from where it
    stops matching the last one."""

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[T, 3, S, S] -> [T, tokens_per_tile, D] projected tokens per frame."""
        ...

    def encode_media(
        self, media: Sequence[MediaItem], frame_tokens: Sequence[torch.Tensor | None]
    ) -> EncodedMedia:
        """Embeddings per media item; frame/video items with `frame_tokens` skip the ViT."""
        ...

    def decode(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        stop_token_ids: Sequence[int],
        max_new_tokens: int,
        output_logits: bool,
    ) -> Decoded:
        """Greedy tokens for the prompt with its media embeddings spliced in."""
        ...

    def score(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        """Summed log-probability of each token-id continuation after the prompt."""
        ...

    def score_after(
        self,
        decoded: Decoded,
        keep: int,
        ids: Sequence[int],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        """`score` with the prompt of a `decode` (its `Decoded.cache`, consumed), its first `keep`
        generated tokens and `ids` (at least one) before the continuations: only `ids` are
        prefilled."""
        ...


class TorchBackend:
    """Eager PyTorch execution of an `NVILAModel` (KV-cached greedy decoding)."""

    name = "torch"

    def __init__(self, model: NVILAModel):
        self.model = model.eval()
        self.prompt_prefix = PromptPrefixCache()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features(pixel_values)

    def encode_media(
        self, media: Sequence[MediaItem], frame_tokens: Sequence[torch.Tensor | None]
    ) -> EncodedMedia:
        return self.model.encode_media_items(media, frame_tokens)

    def decode(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        stop_token_ids: Sequence[int],
        max_new_tokens: int,
        output_logits: bool,
    ) -> Decoded:
        embeds = self.model.embed_inputs(inputs.input_ids, inputs.media, media_embeds)
        cache, reused = self._reused_cache(embeds)
        decoded = greedy_decode(
            self.model,
            embeds[:, reused:],
            stop_token_ids,
            max_new_tokens,
            output_logits=output_logits,
            cache=cache,
        )
        self._keep_prompt(embeds, decoded.cache)
        return decoded

    def score(
        self,
        inputs: ModelInputs,
        media_embeds: Sequence[torch.Tensor],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        embeds = self.model.embed_inputs(inputs.input_ids, inputs.media, media_embeds)
        cache, reused = self._reused_cache(embeds)
        scored = score_continuations(self.model, embeds[:, reused:], continuations, cache=cache)
        self._keep_prompt(embeds, cache)
        scored.reused_tokens = reused
        return scored

    def _reused_cache(self, embeds: torch.Tensor) -> tuple[DynamicCache, int]:
        """A KV cache holding the positions `embeds` [1, L, D] shares with the last prompt, and
        how many there are."""
        cache = DynamicCache(config=self.model.llm.config)
        reused, kept = self.prompt_prefix.match(embeds[0])
        for layer, (keys, values) in enumerate(kept or ()):
            cache.update(keys[:, :, :reused], values[:, :, :reused], layer)
        return cache, reused

    def _keep_prompt(self, embeds: torch.Tensor, cache: DynamicCache) -> None:
        """Keep the prompt's own positions of `cache` (a decode or a choice appended after
        them); copies, because the engine may go on with `cache`."""
        length = embeds.shape[1]
        kv = [
            (c.keys[:, :, :length].clone(), c.values[:, :, :length].clone()) for c in cache.layers
        ]
        self.prompt_prefix.keep(embeds[0], kv)

    def score_after(
        self,
        decoded: Decoded,
        keep: int,
        ids: Sequence[int],
        continuations: Sequence[Sequence[int]],
    ) -> Scored:
        check_continuable(decoded, keep, ids)
        surplus = decoded.cached - decoded.prompt_tokens - keep
        if surplus:
            decoded.cache.crop(-surplus)  # a negative count removes positions at the end
        embeds = self.model.llm.get_input_embeddings()(
            torch.tensor([list(ids)], device=self.device)
        )
        return score_continuations(self.model, embeds, continuations, cache=decoded.cache)


BACKENDS: dict[str, Callable[[NVILAModel], Backend]] = {"torch": TorchBackend}
# Backends that run an `nvila-core export` folder instead of a torch model; imported on first use
# so the torch path never needs onnxruntime.
EXPORT_BACKENDS = {
    "onnxruntime": "nvila_core.runtime.onnx_backend:OnnxRuntimeBackend",
    "tensorrt": "nvila_core.runtime.tensorrt_backend:TensorRTBackend",
}


def backend_factory(name: str) -> Callable[[NVILAModel], Backend]:
    """The registered backend constructor `name`."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    return factory


def export_backend(name: str, export_dir: Path, device: torch.device | str, threads: int = 0):
    """The export-folder backend `name` (e.g. onnxruntime) over `export_dir`; `threads` sizes
    onnxruntime's CPU pool (0: its default), TensorRT runs on the GPU and has none."""
    module_name, _, class_name = EXPORT_BACKENDS[name].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    if name == "onnxruntime":
        return backend_class(export_dir, device, threads=threads)
    return backend_class(export_dir, device)


def make_backend(name: str, model: NVILAModel) -> Backend:
    """The registered backend `name` running `model`."""
    return backend_factory(name)(model)


# ---------------------------------------------------------------- engine
class Engine:
    """Prompt + pixels in, `GenerationResult` out; caches per-frame vision features."""

    def __init__(
        self,
        backend: Backend,
        config: NVILAConfig,
        tokenizer: PreTrainedTokenizerBase,
        cache_frames: int = DEFAULT_CACHE_FRAMES,
        backend_name: str = "torch",
        random_weights: bool = False,
    ):
        self.backend = backend
        self.backend_name = backend_name
        self.random_weights = random_weights
        self.config = config
        self.tokenizer = tokenizer
        self.processor = NVILAProcessor(config, tokenizer)
        self.stop_token_ids = stop_token_ids(tokenizer, config.chat_template)
        self.frame_cache = FrameFeatureCache(cache_frames)
        self.head_frame_cache = FrameFeatureCache(cache_frames)
        """Tokens of frames seen through a head's own tuned vision, by (head, frame key)."""
        self._answer_cache: dict[str, list[int]] = {}
        self._statement_form = self._names_statement_form()
        self.heads: dict[str, FrameHead] = {}
        """The model folder's frame heads by name (`nvila_core.model.frame_head`)."""

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        backend: str = "torch",
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str | None = None,
        seed: int = 0,
        cache_frames: int = DEFAULT_CACHE_FRAMES,
        threads: int = 0,
    ) -> Engine:
        """An engine for a checkpoint folder, or for a preset name with random weights (tests,
        demos, timing; the answers are noise); export backends ("onnxruntime", "tensorrt") take an
        `nvila-core export` folder.

        `threads` (0: the library's default, one per core): CPU threads of the model, for
        onnxruntime its session's intra-op pool, for torch `torch.set_num_threads`, which holds
        for the whole process. On a small CPU that also runs the camera, DDS and a controller,
        fewer threads than cores can be faster: a thread pool waits for its slowest thread."""
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: the library's default), got {threads}")
        path = Path(model)
        if backend in EXPORT_BACKENDS:
            runtime = export_backend(backend, path, device, threads)
            engine = cls(runtime, runtime.config, runtime.tokenizer, cache_frames, backend)
            engine.heads = load_heads(path)
            return engine
        factory = backend_factory(backend)  # fail before loading gigabytes of weights
        if threads:
            torch.set_num_threads(threads)
        random_weights = False
        if path.is_dir():
            nvila, tokenizer = load_checkpoint(path, device=device, dtype=dtype)
            log.info("loaded %s from %s", nvila.config.name, path)
        elif str(model) in list_presets():
            config = NVILAConfig.preset(str(model))
            tokenizer = build_tokenizer(int(config.llm_config["vocab_size"]), config.chat_template)
            nvila = NVILAModel.from_config(
                config, device=device, dtype=dtype, seed=seed, tokenizer=tokenizer
            )
            random_weights = True
            log.warning(
                "preset %r: RANDOM weights (seed %d) and a built-in test tokenizer; outputs are "
                "meaningless",
                str(model),
                seed,
            )
        else:
            raise ConfigError(
                f"{model!r} is neither a checkpoint folder nor a model preset (presets: "
                f"{', '.join(list_presets())})"
            )
        engine = cls(factory(nvila), nvila.config, tokenizer, cache_frames, backend, random_weights)
        if path.is_dir():
            engine.heads = load_heads(path)
        return engine

    # ------------------------------------------------------------ public API
    def generate(
        self,
        prompt: str,
        images: Sequence[ImageLike] = (),
        frames: Sequence[ImageLike] = (),
        frame_keys: Sequence[Hashable] | None = None,
        video: Sequence[ImageLike] = (),
        video_keys: Sequence[Hashable] | None = None,
        max_new_tokens: int = 32,
        output_logits: bool = False,
    ) -> GenerationResult:
        """Answer `prompt` about images, frames (cached per `frame_keys` or content) or a video."""
        inputs = self.processor(
            prompt,
            images=images,
            frames=frames,
            frame_keys=frame_keys,
            video=video,
            video_keys=video_keys,
        )
        return self.run(inputs, max_new_tokens, output_logits)

    def navigate(
        self,
        instruction: str,
        frames: Sequence[ImageLike],
        frame_keys: Sequence[Hashable] | None = None,
        max_new_tokens: int = 32,
        output_logits: bool = False,
        answers: Sequence[str] | None = None,
        previous_actions: Sequence[str] | None = None,
    ) -> GenerationResult:
        """The next action for the episode so far, in the model's navigation format
        (`NVILAProcessor.navigation`): for NaVILA, `frames` is every observation since the
        instruction (oldest first) and 8 are sampled, the newest last; for a "recent" history
        model, one frame per decision. Pass stable `frame_keys` (e.g. frame sequence numbers)
        to skip hashing pixels. `previous_actions`: executed action phrases, oldest first (used
        by compact-prompt models). With `answers` (the model's answers for the action grammar,
        `processor.navigation_answer`) the most probable of them is chosen instead of
        generating. A `nav_statement` model first generates its statement, then the answers
        are chosen after it (`choose_after_statement`); generated or chosen, the result's text
        is the action and its `statement` what was said before."""
        inputs = self.processor.navigation(
            instruction, frames, frame_keys=frame_keys, previous_actions=previous_actions
        )
        if answers is not None:
            if self.config.nav_statement:
                return self.choose_after_statement(inputs, answers)
            return self.choose(inputs, answers)
        if not self.config.nav_statement:
            return self.run(inputs, max_new_tokens, output_logits)
        # the statement comes first and does not count against the action's tokens
        result = self.run(inputs, max_new_tokens + STATEMENT_MAX_TOKENS, output_logits)
        said = statement_of(result.text)
        statement = self._checked(said, result.timings)
        if statement != said:  # the action is generated again after the corrected verdict
            first = result.timings
            ids = self.processor.answer_ids(statement)[:-1]  # without the end token
            result = self.run(_said(inputs, ids, statement), max_new_tokens, output_logits)
            result.text = result.text.strip()
            result.timings["statement_ms"] = first["prefill_ms"] + first["decode_ms"]
            result.timings["verdict_changed"] = 1
        else:
            result.text = result.text[len(said or "") :].strip()
        result.statement = statement
        return result

    def choose_after_statement(
        self, inputs: ModelInputs, answers: Sequence[str]
    ) -> GenerationResult:
        """For a `nav_statement` model: the statement is generated greedily (`_state`) and
        `answers` scored after it. The tokens every answer shares (the statement) join the
        prompt, so they are prefilled once instead of being scored once per answer; the ranking
        is that of `choose` over "statement answer", and `answer_log_probs` are the answers'
        scores given the statement. The result's text is the chosen answer without the
        statement, which is in `statement`. A generation without a statement leaves the answers
        scored alone (counted in timings["statement_missing"]).

        The statement's generation leaves its KV cache behind: where the tokens it wrote are
        the statement's own (the usual case), the scoring continues that cache, so only the
        tokens after them ("? No." and what the answers share) are prefilled, not the whole
        prompt again (timings["statement_cache"]: 1; 0 where the prompt is prefilled again)."""
        statement, said, decoded = self._state(inputs)
        if statement is None:
            result = self.choose(inputs, answers)
        else:
            # statements differ at every step: their ids are not kept in the answer cache
            full = [self.processor.answer_ids(f"{statement} {answer}") for answer in answers]
            shared = _shared_prefix(full)
            continuations = [ids[shared:] for ids in full]
            result = self._choose_continuing(decoded, full[0][:shared], answers, continuations)
            if result is None:
                stated = _said(inputs, full[0][:shared], statement)
                result = self._choose_ids(stated, answers, continuations)
                result.timings["statement_cache"] = 0
        result.statement = statement
        # the media went through the vision path (or the frame cache) for the statement
        for key in ("vision_ms", "visual_tokens", "vit_passes", "cached_frames"):
            result.timings[key] = said.timings[key]
        result.timings["statement_ms"] = said.timings["prefill_ms"] + said.timings["decode_ms"]
        result.timings["statement_tokens"] = said.timings["new_tokens"]
        result.timings["statement_missing"] = int(statement is None)
        if "verdict_changed" in said.timings:
            result.timings["verdict_changed"] = said.timings["verdict_changed"]
        return result

    def _choose_continuing(
        self,
        decoded: Decoded,
        stated: list[int],
        answers: Sequence[str],
        continuations: list[list[int]],
    ) -> GenerationResult | None:
        """`_choose_ids` after the answer's first tokens `stated`, continuing the statement's
        decode: its cache is cut back to where what it fed stops agreeing with `stated`; None
        when that is inside the prompt or the backend keeps no cache."""
        if decoded.cache is None:
            return None
        forced = self._statement_form[0] if self._statement_form is not None else []
        fed = [*forced, *decoded.token_ids[: decoded.cached - decoded.prompt_tokens]]
        common = _shared_prefix([[*fed, -1], [*stated, -2]])
        common = min(common, len(stated) - 1)  # at least one token is prefilled
        if common < len(forced):
            return None
        with torch.inference_mode():
            scored = self.backend.score_after(
                decoded, common - len(forced), stated[common:], continuations
            )
        return _chosen(answers, continuations, scored, {"statement_cache": 1})

    def _state(self, inputs: ModelInputs) -> tuple[str | None, GenerationResult, Decoded]:
        """The statement a `nav_statement` model makes before its action, checked (`_checked`),
        and the generation that made it. Under nav_verdict: names the engine knows the form,
        "Close ahead: X. Is Y close ahead?" and the verdict it gives itself, so the opening joins
        the prompt and generation stops at the question mark: only the two names and the words
        between them are generated (navila-nano: a median 13 tokens instead of 28 with the
        verdict and the action after it), and the greedy names are the ones a full generation
        writes. There `said.timings` has no "verdict_changed": the model wrote no verdict. The
        decode comes back too, for its KV cache."""
        if self._statement_form is None:
            said, decoded = self._run(inputs, STATEMENT_MAX_TOKENS)
            return self._checked(statement_of(said.text), said.timings), said, decoded
        opening_ids, question_mark = self._statement_form
        begun = _said(inputs, opening_ids, STATEMENT_OPENING)
        said, decoded = self._run(begun, STATEMENT_MAX_TOKENS, stop_ids=[question_mark])
        question = f"{STATEMENT_OPENING}{said.text}?"
        return names_verdict(question) or statement_of(question), said, decoded

    def _names_statement_form(self) -> tuple[list[int], int] | None:
        """For nav_verdict: names, the token ids of the statement's opening and of the "?" that
        ends its question, where this tokenizer writes both inside a statement as on their own
        (so forcing the one and stopping at the other changes nothing a greedy generation says);
        else None."""
        if not self.config.nav_statement or self.config.nav_verdict != "names":
            return None
        example = self.processor.answer_ids(
            f"{STATEMENT_OPENING} the red chair. Is the red chair close ahead? No."
        )
        opening = self.processor.answer_ids(STATEMENT_OPENING)[:-1]  # without the end token
        mark = self.tokenizer("?", add_special_tokens=False).input_ids
        if example[: len(opening)] != opening or len(mark) != 1 or mark[0] not in example:
            return None
        return opening, mark[0]

    def _checked(self, statement: str | None, timings: dict) -> str | None:
        """`statement` with the verdict `config.nav_verdict` gives (unchanged for "model", or
        when it is not of the form `names_verdict` reads); counts a change in
        timings["verdict_changed"]."""
        checked = statement
        if statement is not None and self.config.nav_verdict == "names":
            checked = names_verdict(statement) or statement
        timings["verdict_changed"] = int(checked != statement)
        return checked

    def choose(self, inputs: ModelInputs, answers: Sequence[str]) -> GenerationResult:
        """The most probable of a closed set of `answers` for processed `inputs`.

        Each answer is scored as the model would have to generate it (its tokens and the end
        token, log-probabilities summed), after one shared prefill. Unlike free generation the
        result is always one of `answers`, and a model whose first token leans one way cannot
        commit to a sentence it would rank lower as a whole. The result's text is the chosen
        answer and `answer_log_probs` holds every answer's score, in order.
        """
        if not answers:
            raise ValueError("choose needs at least one answer")
        return self._choose_ids(inputs, answers, [self._answer_ids(a) for a in answers])

    def _choose_ids(
        self, inputs: ModelInputs, answers: Sequence[str], continuations: list[list[int]]
    ) -> GenerationResult:
        """`choose` with each answer's token ids (ending with the end token) given."""
        with torch.inference_mode():
            encoded = self._encode_media(inputs.media)
            scored = self.backend.score(inputs, encoded.embeds, continuations)
        vision = {
            "vision_ms": encoded.vision_ms,
            "visual_tokens": encoded.visual_tokens,
            "vit_passes": encoded.vit_passes,
            "cached_frames": encoded.cached_frames,
        }
        return _chosen(answers, continuations, scored, vision)

    def run(
        self,
        inputs: ModelInputs,
        max_new_tokens: int = 32,
        output_logits: bool = False,
        stop_ids: Sequence[int] = (),
    ) -> GenerationResult:
        """Generate for already processed inputs, until an end token, one of `stop_ids` (not
        part of the result either) or `max_new_tokens`."""
        return self._run(inputs, max_new_tokens, output_logits, stop_ids)[0]

    def _run(
        self,
        inputs: ModelInputs,
        max_new_tokens: int,
        output_logits: bool = False,
        stop_ids: Sequence[int] = (),
    ) -> tuple[GenerationResult, Decoded]:
        """`run`, and the backend's decode behind its result (its KV cache)."""
        with torch.inference_mode():
            encoded = self._encode_media(inputs.media)
            decoded = self.backend.decode(
                inputs,
                encoded.embeds,
                [*self.stop_token_ids, *stop_ids],
                max_new_tokens,
                output_logits,
            )
        return make_result(self.tokenizer, decoded, encoded), decoded

    def _answer_ids(self, answer: str) -> list[int]:
        ids = self._answer_cache.get(answer)
        if ids is None:
            ids = self._answer_cache[answer] = self.processor.answer_ids(answer)
        return ids

    def frame_tokens(self, frame: ImageLike, frame_key: Hashable | None = None) -> torch.Tensor:
        """One frame's projected visual tokens [tokens, D], what the LLM reads of it as a
        navigation frame; cached per `frame_key` (or content) like a query's frames."""
        keys = None if frame_key is None else [frame_key]
        media = self.processor(IMAGE_TOKEN, frames=[frame], frame_keys=keys).media
        with torch.inference_mode():
            tokens, _, _ = self._cached_frame_tokens(media)
        return tokens[0][0]

    def ask_head(
        self,
        name: str,
        frames: ImageLike | Sequence[ImageLike],
        frame_keys: Hashable | Sequence[Hashable | None] | None = None,
        about: str | None = None,
    ) -> tuple[str, list[float]]:
        """Frame head `name`'s answer and its probability per answer: `frames` is one frame, or
        as many as the head reads (oldest first, the current last), with a key each (or None);
        a named question's head answers `about` one of its names ("the blue door")."""
        head = self.heads.get(name)
        if head is None:
            raise KeyError(f"the model has no frame head {name!r} (has: {sorted(self.heads)})")
        if not isinstance(frames, list | tuple):
            frames, frame_keys = [frames], [frame_keys]
        keys = [None] * len(frames) if frame_keys is None else list(frame_keys)
        if len(frames) != head.frames or len(keys) != len(frames):
            raise ValueError(
                f"head {name!r} reads {head.frames} frame(s), got {len(frames)} frames and "
                f"{len(keys)} keys"
            )
        tokens = [
            self.head_frame_tokens(head, frame, key).reshape(-1)
            for frame, key in zip(frames, keys, strict=True)
        ]
        return head.answer(torch.cat(tokens), about)

    def head_frame_tokens(
        self, head: FrameHead, frame: ImageLike, frame_key: Hashable | None = None
    ) -> torch.Tensor:
        """The tokens [tokens, D] frame head `head` reads of one frame: the model's own
        (`frame_tokens`), or, for a head with its own tuned vision, that vision's (in PyTorch on
        every backend; cached per head and `frame_key`, or content, like the model's)."""
        if head.vision is None:
            return self.frame_tokens(frame, frame_key)
        key = None if frame_key is None else (head.name, ("key", frame_key))
        tokens = None if key is None else self.head_frame_cache.get(key)
        if tokens is not None:  # a keyed frame seen before: not even preprocessed again
            return tokens
        keys = None if frame_key is None else [frame_key]
        pixels = self.processor(IMAGE_TOKEN, frames=[frame], frame_keys=keys).media[0].pixel_values
        if key is None:
            key = (head.name, content_key(pixels[0]))
            tokens = self.head_frame_cache.get(key)
        if tokens is None:
            with torch.inference_mode():
                tokens = head.vision(pixels.cpu())[0]
            self.head_frame_cache.put(key, tokens)
        return tokens

    def cache_info(self) -> dict[str, int]:
        return self.frame_cache.info()

    def clear_cache(self) -> None:
        """Forget cached frames and the last prompt, e.g. when frame keys restart with a new
        episode."""
        self.frame_cache.clear()
        self.head_frame_cache.clear()
        self.backend.prompt_prefix.clear()

    # ------------------------------------------------------------ frame cache
    def _encode_media(self, media: Sequence[MediaItem]) -> EncodedMedia:
        synchronize(self.backend.device)
        start = time.perf_counter()
        if self.frame_cache.enabled:
            frame_tokens, encoded_frames, cached_frames = self._cached_frame_tokens(media)
        else:
            frame_tokens, encoded_frames, cached_frames = [None] * len(media), 0, 0
        encoded = self.backend.encode_media(media, frame_tokens)
        synchronize(self.backend.device)
        encoded.vit_passes += encoded_frames
        encoded.cached_frames = cached_frames
        encoded.vision_ms = (time.perf_counter() - start) * 1e3
        return encoded

    def _cached_frame_tokens(
        self, media: Sequence[MediaItem]
    ) -> tuple[list[torch.Tensor | None], int, int]:
        """Per item, [T, tokens, D] frame tokens (None for images), then how many frames went
        through the ViT and how many reused features (from the cache or an identical frame).

        Cache misses of the whole request go through the ViT in one batch; identical frames
        within a request (e.g. the black padding of a short history) are encoded once.
        """
        item_keys: list[list[Hashable]] = []
        found: dict[Hashable, torch.Tensor] = {}
        pending: dict[Hashable, torch.Tensor] = {}  # key -> pixels of a frame to encode
        for item in media:
            keys: list[Hashable] = []
            item_keys.append(keys)
            if item.kind == "image":
                continue
            for pixels, key in zip(item.pixel_values, _frame_keys(item), strict=True):
                key = content_key(pixels) if key is None else ("key", key)
                keys.append(key)
                if key in found or key in pending:
                    continue
                features = self.frame_cache.get(key)
                if features is None:
                    pending[key] = pixels
                else:
                    found[key] = features
        if pending:
            computed = self.backend.frame_features(torch.stack(list(pending.values())))
            for key, features in zip(pending, computed, strict=True):
                self.frame_cache.put(key, features)
                found[key] = features
        frame_tokens: list[torch.Tensor | None] = [
            None if item.kind == "image" else torch.stack([found[k] for k in keys])
            for item, keys in zip(media, item_keys, strict=True)
        ]
        shown = sum(len(keys) for keys in item_keys)
        return frame_tokens, len(pending), shown - len(pending)


def _frame_keys(item: MediaItem) -> list[Hashable | None]:
    """The caller's per-frame keys of a frame/video item, None where there is none."""
    count = item.pixel_values.shape[0]
    if item.keys is None:
        return [None] * count
    if len(item.keys) != count:
        raise ValueError(f"{item.kind} item has {count} frames but {len(item.keys)} cache keys")
    return list(item.keys)


def _chosen(
    answers: Sequence[str],
    continuations: list[list[int]],
    scored: Scored,
    timings: dict[str, float | int],
) -> GenerationResult:
    """The best-scored answer as a result, with the scoring's timings added to `timings`."""
    best = max(range(len(answers)), key=scored.log_probs.__getitem__)
    return GenerationResult(
        text=answers[best].strip(),
        token_ids=continuations[best][:-1],
        stopped_by="choice",
        timings={
            **timings,
            "prefill_ms": scored.prefill_ms,
            "score_ms": scored.score_ms,
            "prompt_tokens": scored.prompt_tokens,
            "reused_prompt_tokens": scored.reused_tokens,
            "answers": len(answers),
        },
        answer_log_probs=scored.log_probs,
    )


def _shared_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading ids all `sequences` share, leaving each at least its last one."""
    shared = min(len(ids) for ids in sequences) - 1
    for i in range(shared):
        if len({ids[i] for ids in sequences}) > 1:
            return i
    return shared


def _said(inputs: ModelInputs, ids: list[int], statement: str) -> ModelInputs:
    """`inputs` with the answer begun: `ids` (the tokens of `statement`) follow the prompt."""
    return ModelInputs(inputs.input_ids + ids, inputs.media, inputs.prompt_text + statement)
