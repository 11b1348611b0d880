"""Greedy decoding: the KV cache changes nothing, stop tokens and limits end generation; scoring a
closed answer set equals summing the log-probabilities of a full recomputation."""

import pytest
import torch

from nvila_core.model.generation import (
    AnswerTree,
    generate,
    greedy_decode,
    score_continuations,
)
from nvila_core.model.processing import NVILAProcessor

TIMING_KEYS = {
    "vision_ms",
    "prefill_ms",
    "decode_ms",
    "decode_tokens_per_s",
    "prompt_tokens",
    "visual_tokens",
    "vit_passes",
    "cached_frames",
}


@pytest.fixture(scope="module")
def image_inputs(tiny_model, tiny_tokenizer):
    processor = NVILAProcessor(tiny_model.config, tiny_tokenizer)
    image = torch.Generator().manual_seed(0)
    pixels = (torch.rand(48, 64, 3, generator=image) * 255).to(torch.uint8).numpy()
    return processor("Describe the scene.", images=[pixels])


def test_kv_cache_generation_equals_full_recomputation(tiny_model, image_inputs):
    embeds = tiny_model.embed_inputs(image_inputs.input_ids, image_inputs.media).detach()
    cached = greedy_decode(tiny_model, embeds, (), 20, use_cache=True, output_logits=True)
    recomputed = greedy_decode(tiny_model, embeds, (), 20, use_cache=False, output_logits=True)
    assert len(cached.token_ids) == 20
    assert len(set(cached.token_ids)) > 5  # a real sequence, not one token repeated
    assert cached.token_ids == recomputed.token_ids
    torch.testing.assert_close(cached.logits, recomputed.logits, rtol=0, atol=1e-5)


def test_generate_reports_text_and_timings(tiny_model, tiny_tokenizer, image_inputs):
    result = generate(tiny_model, tiny_tokenizer, image_inputs, max_new_tokens=6)
    assert result.stopped_by == "max_new_tokens"
    assert len(result.token_ids) == 6
    assert result.text == tiny_tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert set(result.timings) >= TIMING_KEYS
    rows, cols = image_inputs.media[0].block_size
    assert result.timings["visual_tokens"] == tiny_model.config.tokens_per_tile * rows * cols
    assert result.timings["vit_passes"] == image_inputs.media[0].pixel_values.shape[0]
    # The visual tokens and one "\n" replace the single <image> id.
    expected_length = len(image_inputs.input_ids) - 1 + result.timings["visual_tokens"] + 1
    assert result.timings["prompt_tokens"] == expected_length
    assert result.timings["cached_frames"] == 0
    assert result.timings["decode_tokens_per_s"] > 0


def test_a_stop_token_ends_generation_and_is_not_returned(tiny_model, tiny_tokenizer, image_inputs):
    free = generate(tiny_model, tiny_tokenizer, image_inputs, max_new_tokens=8)
    # The first token that did not occur before it, past the first position.
    stop_at = next(i for i, t in enumerate(free.token_ids) if i > 0 and t not in free.token_ids[:i])
    stop = free.token_ids[stop_at]
    stopped = generate(
        tiny_model, tiny_tokenizer, image_inputs, stop_token_ids=[stop], max_new_tokens=8
    )
    assert stopped.stopped_by == "stop_token"
    assert stopped.token_ids == free.token_ids[:stop_at]


def test_max_new_tokens_must_be_positive(tiny_model, image_inputs):
    embeds = tiny_model.embed_inputs(image_inputs.input_ids, image_inputs.media)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(tiny_model, embeds, max_new_tokens=0)


def test_scored_continuations_equal_full_recomputation(tiny_model, image_inputs):
    embeds = tiny_model.embed_inputs(image_inputs.input_ids, image_inputs.media).detach()
    # different lengths, shared prefixes, a single token, a repeated continuation
    continuations = [[5, 9, 11, 2], [5, 9, 12], [7], [5, 9, 11, 2], [30, 31, 32, 33, 34, 35]]
    scored = score_continuations(tiny_model, embeds, continuations)
    embedding = tiny_model.llm.get_input_embeddings()
    with torch.inference_mode():
        for tokens, got in zip(continuations, scored.log_probs, strict=True):
            full = torch.cat([embeds, embedding(torch.tensor([tokens]))], dim=1)
            logp = tiny_model(full, use_cache=False).logits[0].float().log_softmax(-1)
            start = embeds.shape[1] - 1
            expected = sum(float(logp[start + i, t]) for i, t in enumerate(tokens))
            assert got == pytest.approx(expected, abs=1e-4)
    assert scored.log_probs[0] == scored.log_probs[3]
    assert scored.prompt_tokens == embeds.shape[1] and scored.prefill_ms > 0
    with pytest.raises(ValueError, match="at least one token"):
        score_continuations(tiny_model, embeds, [[5], []])


def test_answer_tree_merges_shared_beginnings_and_masks_other_branches():
    continuations = [[5, 9, 11, 2], [5, 9, 12], [7], [5, 8]]
    tree = AnswerTree.build(continuations)
    # every token but each answer's last, shared beginnings once: 5, 9, 11 (under 9), nothing
    # for [7], 5 again for [5, 8]
    assert tree.tokens == [5, 9, 11] and tree.parents == [-1, 0, 1] and tree.depths == [0, 1, 2]
    assert tree.paths == [[0, 1, 2], [0, 1], [], [0]]
    mask = tree.mask(context=4)
    assert mask.shape == (3, 7) and mask[:, :4].all()
    assert mask[2, 4:].tolist() == [True, True, True]  # its ancestors and itself
    assert mask[0, 4:].tolist() == [True, False, False]  # nothing after it
    siblings = AnswerTree.build([[5, 1, 2], [6, 3, 4]])
    assert siblings.mask(context=0).astype(int).tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],  # the second answer's first node never sees the first answer's
        [0, 0, 1, 1],
    ]
    assert len(AnswerTree.build([[1], [2]])) == 0
    # one call: 2 prompt positions after 1 cached, then the nodes
    call = siblings.call_mask(new=2, before=1).astype(int).tolist()
    assert call == [
        [1, 1, 0, 0, 0, 0, 0],  # the prompt is causal over the cache and itself
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],  # a node sees the whole prompt, its ancestors and itself
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 1, 1],
    ]
