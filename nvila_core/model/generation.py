"""Greedy decoding for NVILA: one prefill over the spliced prompt, then one token per step.

NVILA and NaVILA are evaluated greedily (nvila.md §4.4, navila.md §1.2). Two paths produce the
same tokens: the KV-cache path used in production and a full-recomputation path that exists to
prove the cache changes nothing. `score_continuations` instead ranks a closed set of answers
(the robot's action grammar) by their probability after the same prefill.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from nvila_core.model.modeling import EncodedMedia, NVILAModel

if TYPE_CHECKING:
    from nvila_core.model.processing import ModelInputs


@dataclass
class Decoded:
    """Raw output of `greedy_decode`."""

    token_ids: list[int]  # generated ids, the stop token excluded
    stopped_by: str  # "stop_token" | "max_new_tokens"
    prefill_ms: float
    decode_ms: float
    prompt_tokens: int  # sequence length of the prefill (text + media embeddings)
    logits: torch.Tensor | None = None  # [steps, vocab] float32 when asked for
    cache: Any = None
    """The backend's KV cache after the prompt and the generated tokens it fed (`cached`
    positions; the stop token is never fed), for `Backend.score_after`; None where the backend
    keeps none."""
    cached: int = 0
    reused_tokens: int = 0
    """Leading prompt positions whose KV came from the previous prompt (`PromptPrefixCache`),
    not prefilled here."""


@dataclass
class GenerationResult:
    """What one generate / navigate call returns."""

    text: str
    token_ids: list[int]
    stopped_by: str
    timings: dict[str, float | int] = field(default_factory=dict)
    logits: torch.Tensor | None = None  # [steps, vocab], only with output_logits=True
    answer_log_probs: list[float] | None = None  # per candidate, only from `Engine.choose`
    statement: str | None = None  # what a nav_statement model said before its choice


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def greedy_decode(
    model: NVILAModel,
    inputs_embeds: torch.Tensor,
    stop_token_ids: Sequence[int] = (),
    max_new_tokens: int = 32,
    use_cache: bool = True,
    output_logits: bool = False,
    cache: DynamicCache | None = None,
) -> Decoded:
    """Greedy tokens after `inputs_embeds` [1, L, D].

    With `use_cache=False` every step reruns the whole sequence (prompt embeddings plus the
    embeddings of the tokens generated so far); it is slow and exists only to check the cache.
    `cache`: the KV cache of the prompt's first positions (`PromptPrefixCache`), so that only
    `inputs_embeds`, the rest of it, is prefilled; it is consumed.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if cache is not None and not use_cache:
        raise ValueError("a prompt prefix's cache needs use_cache=True")
    stops = set(stop_token_ids)
    embedding = model.llm.get_input_embeddings()
    device = model.device
    before = 0 if cache is None else cache.get_seq_length()
    if use_cache and cache is None:
        cache = DynamicCache(config=model.llm.config)
    sequence = inputs_embeds
    tokens: list[int] = []
    step_logits: list[torch.Tensor] = []
    stopped_by = "max_new_tokens"
    synchronize(device)
    start = time.perf_counter()
    prefill_ms = 0.0
    step_input = inputs_embeds
    for step in range(max_new_tokens):
        if use_cache:
            out = model(step_input, past_key_values=cache, use_cache=True, logits_to_keep=1)
        else:
            out = model(sequence, use_cache=False, logits_to_keep=1)
        logits = out.logits[0, -1].float()
        token = int(torch.argmax(logits))
        if step == 0:
            synchronize(device)
            prefill_ms = (time.perf_counter() - start) * 1e3
        if output_logits:
            step_logits.append(logits)
        if token in stops:
            stopped_by = "stop_token"
            break
        tokens.append(token)
        step_input = embedding(torch.tensor([[token]], device=device))
        if not use_cache:
            sequence = torch.cat([sequence, step_input], dim=1)
    synchronize(device)
    decode_ms = (time.perf_counter() - start) * 1e3 - prefill_ms
    return Decoded(
        token_ids=tokens,
        stopped_by=stopped_by,
        prefill_ms=prefill_ms,
        decode_ms=decode_ms,
        prompt_tokens=before + inputs_embeds.shape[1],
        logits=torch.stack(step_logits) if output_logits else None,
        cache=cache,
        cached=cache.get_seq_length() if cache is not None else 0,
        reused_tokens=before,
    )


@dataclass
class Scored:
    """Raw output of `score_continuations`: one summed log-probability per continuation."""

    log_probs: list[float]
    prefill_ms: float
    score_ms: float  # after the prefill: the continuation tokens (0 where one call does both)
    prompt_tokens: int
    reused_tokens: int = 0  # as in `Decoded`


def check_continuations(continuations: Sequence[Sequence[int]]) -> None:
    if not continuations or any(len(c) == 0 for c in continuations):
        raise ValueError("need at least one continuation, each with at least one token")


def check_continuable(decoded: Decoded, keep: int, ids: Sequence[int]) -> None:
    if decoded.cache is None:
        raise ValueError("the decode kept no KV cache to continue")
    if not 0 <= keep <= decoded.cached - decoded.prompt_tokens:
        raise ValueError(
            f"keep must be in [0, {decoded.cached - decoded.prompt_tokens}] (the generated tokens "
            f"the decode fed), got {keep}"
        )
    if not ids:
        raise ValueError("score_after needs at least one token id to prefill")


@dataclass(frozen=True)
class AnswerTree:
    """The tokens a closed answer set feeds after the prompt, as one prefix tree.

    Scoring an answer needs the logits after each of its tokens but the last. Those tokens of
    every answer, merged where answers share a beginning ("The next action is turn ..."), are the
    tree's nodes; fed as one sequence in which each node sees the context and its own ancestors
    only (`mask`), at the position it would have in its own answer (`depths`), one forward gives
    every logit the scores need, however many answers there are.
    """

    tokens: list[int]  # one per node, parents before children
    parents: list[int]  # the parent node's index, -1 on the first depth
    depths: list[int]
    paths: list[list[int]]  # per answer, the node of each of its tokens but the last

    @classmethod
    def build(cls, continuations: Sequence[Sequence[int]]) -> AnswerTree:
        check_continuations(continuations)
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        paths: list[list[int]] = []
        index: dict[tuple[int, int], int] = {}
        for continuation in continuations:
            parent, path = -1, []
            for depth, token in enumerate(continuation[:-1]):
                node = index.get((parent, token))
                if node is None:
                    node = index[(parent, token)] = len(tokens)
                    tokens.append(token)
                    parents.append(parent)
                    depths.append(depth)
                parent = node
                path.append(node)
            paths.append(path)
        return cls(tokens, parents, depths, paths)

    def __len__(self) -> int:
        return len(self.tokens)

    def mask(self, context: int) -> np.ndarray:
        """bool [nodes, context + nodes]: what each node attends to (the context, its ancestors,
        itself)."""
        allowed = np.zeros((len(self), context + len(self)), dtype=bool)
        allowed[:, :context] = True
        for node, parent in enumerate(self.parents):
            allowed[node, context + node] = True
            if parent >= 0:
                allowed[node, context : context + node] |= allowed[parent, context : context + node]
        return allowed

    def call_mask(self, new: int, before: int) -> np.ndarray:
        """bool [new + nodes, before + new + nodes]: one call that feeds `new` prompt positions
        after `before` cached ones, then the nodes: the prompt rows causal, the node rows as in
        `mask`."""
        context = before + new
        allowed = np.zeros((new + len(self), context + len(self)), dtype=bool)
        allowed[:new, :before] = True
        allowed[:new, before:context] = np.tri(new, dtype=bool)
        allowed[new:] = self.mask(context)
        return allowed

    def scores(
        self,
        continuations: Sequence[Sequence[int]],
        first: torch.Tensor,
        nodes: torch.Tensor | None,
    ) -> list[float]:
        """Summed log-probability per answer, from the log-probs after the context `first` [V]
        and after each node `nodes` [nodes, V] (None for a tree without nodes)."""
        scores = []
        for continuation, path in zip(continuations, self.paths, strict=True):
            total = float(first[continuation[0]])
            for node, token in zip(path, continuation[1:], strict=True):
                total += float(nodes[node, token])
            scores.append(total)
        return scores


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool attention mask (True: attend) as the additive bias HF attention takes as is."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


@torch.inference_mode()
def score_continuations(
    model: NVILAModel,
    inputs_embeds: torch.Tensor,
    continuations: Sequence[Sequence[int]],
    cache: DynamicCache | None = None,
) -> Scored:
    """log p(continuation | prompt) for each token-id list, summed over its tokens.

    One forward over `inputs_embeds` [1, L, D] followed by the answers' prefix tree
    (`AnswerTree.call_mask`: each node sees the prompt and its own ancestors), whatever the
    number of answers; it returns the logits of the prompt's last position and of every node.
    A tree's few rows cost far less inside the prompt's forward than as a forward of their own,
    where every weight is read again for them (152 M-parameter bench LLM: 38 nodes alone took
    about 170 ms, a 517-token prefill 850). `cache`: the KV cache of what comes before
    `inputs_embeds` (a decode's or a kept prompt's), so only they are prefilled; it is consumed.
    """
    tree = AnswerTree.build(continuations)
    device = model.device
    before = 0 if cache is None else cache.get_seq_length()
    cache = DynamicCache(config=model.llm.config) if cache is None else cache
    new = inputs_embeds.shape[1]
    context = before + new
    synchronize(device)
    start = time.perf_counter()
    step = inputs_embeds
    mask, positions = None, None
    if len(tree):
        nodes_in = model.llm.get_input_embeddings()(torch.tensor([tree.tokens], device=device))
        step = torch.cat([inputs_embeds, nodes_in.to(inputs_embeds.dtype)], dim=1)
        allowed = torch.from_numpy(tree.call_mask(new, before)).to(device)
        mask = additive_mask(allowed, step.dtype)[None, None]
        positions = torch.tensor(
            [[*range(before, context), *(context + d for d in tree.depths)]], device=device
        )
    logits = (
        model(
            step,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=len(tree) + 1,
        )
        .logits[0]
        .float()
    )
    logp = logits.log_softmax(-1)
    scores = tree.scores(continuations, logp[0], logp[1:] if len(tree) else None)
    synchronize(device)
    return Scored(
        log_probs=scores,
        prefill_ms=(time.perf_counter() - start) * 1e3,
        score_ms=0.0,
        prompt_tokens=context,
    )


@torch.inference_mode()
def encode_media_timed(model: NVILAModel, inputs: ModelInputs) -> EncodedMedia:
    """Every media item of `inputs` through the vision path, timed."""
    synchronize(model.device)
    start = time.perf_counter()
    encoded = model.encode_media_items(inputs.media)
    synchronize(model.device)
    encoded.vision_ms = (time.perf_counter() - start) * 1e3
    return encoded


def make_result(
    tokenizer: PreTrainedTokenizerBase, decoded: Decoded, encoded: EncodedMedia
) -> GenerationResult:
    """A `GenerationResult` with text and the timings the robot logs."""
    generated = len(decoded.token_ids)
    # The first token comes from the prefill; the decode phase produces the rest.
    decode_steps = generated - 1 if decoded.stopped_by == "max_new_tokens" else generated
    decode_s = decoded.decode_ms / 1e3
    timings: dict[str, float | int] = {
        "vision_ms": encoded.vision_ms,
        "prefill_ms": decoded.prefill_ms,
        "decode_ms": decoded.decode_ms,
        "decode_tokens_per_s": decode_steps / decode_s
        if decode_steps > 0 and decode_s > 0
        else 0.0,
        "prompt_tokens": decoded.prompt_tokens,
        "reused_prompt_tokens": decoded.reused_tokens,
        "visual_tokens": encoded.visual_tokens,
        "new_tokens": generated,
        "vit_passes": encoded.vit_passes,
        "cached_frames": encoded.cached_frames,
    }
    return GenerationResult(
        text=tokenizer.decode(decoded.token_ids, skip_special_tokens=True),
        token_ids=decoded.token_ids,
        stopped_by=decoded.stopped_by,
        timings=timings,
        logits=decoded.logits,
    )


def generate(
    model: NVILAModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: ModelInputs,
    stop_token_ids: Sequence[int] = (),
    max_new_tokens: int = 32,
    use_cache: bool = True,
    output_logits: bool = False,
    encoded: EncodedMedia | None = None,
) -> GenerationResult:
    """Greedy answer to processed `inputs`; `encoded` supplies media embeddings computed
    elsewhere (the engine's frame cache), otherwise the media are encoded here."""
    if encoded is None:
        encoded = encode_media_timed(model, inputs)
    with torch.inference_mode():
        embeds = model.embed_inputs(inputs.input_ids, inputs.media, encoded.embeds)
    decoded = greedy_decode(model, embeds, stop_token_ids, max_new_tokens, use_cache, output_logits)
    return make_result(tokenizer, decoded, encoded)
