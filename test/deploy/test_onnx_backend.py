"""`Engine(backend="onnxruntime")` over an export folder answers like the torch backend."""

import contextlib
import dataclasses

import pytest
import torch

from nvila_core.model.generation import AnswerTree, Decoded
from nvila_core.model.processing import ModelInputs
from nvila_core.quant import simulated
from nvila_core.runtime.engine import Engine, TorchBackend
from nvila_core.runtime.onnx_backend import OnnxRuntimeBackend

INSTRUCTION = "walk past the sofa and stop at the kitchen door"


@pytest.fixture(scope="module")
def ort_engine(fp32_export):
    return Engine.from_pretrained(fp32_export, backend="onnxruntime", cache_frames=64)


def test_navigation_matches_torch_and_uses_the_frame_and_prompt_caches(
    ort_engine, tiny_model, tiny_tokenizer, make_frames
):
    assert isinstance(ort_engine.backend, OnnxRuntimeBackend)
    assert ort_engine.backend_name == "onnxruntime"
    ort_engine.clear_cache()
    full_prefill = TorchBackend(tiny_model)
    full_prefill.prompt_prefix.enabled = False
    torch_engine = Engine(full_prefill, tiny_model.config, tiny_tokenizer)
    history = make_frames(9)
    for step in range(1, len(history) + 1):
        frames, keys = history[:step], list(range(step))
        ours = ort_engine.navigate(INSTRUCTION, frames, keys, max_new_tokens=6, output_logits=True)
        ref = torch_engine.navigate(INSTRUCTION, frames, keys, max_new_tokens=6, output_logits=True)
        assert ours.token_ids == ref.token_ids and ours.text == ref.text
        torch.testing.assert_close(ours.logits, ref.logits, rtol=0, atol=1e-4)
        assert ours.timings["prompt_tokens"] == ref.timings["prompt_tokens"]
        # first step: the frame and the black padding frame; then only the new frame
        assert ours.timings["vit_passes"] == (2 if step == 1 else 1)
        assert ours.timings["cached_frames"] == (6 if step == 1 else 7)
        # from the second step on, the text before the frames is the last prompt's
        assert (ours.timings["reused_prompt_tokens"] > 0) == (step > 1)
    assert ort_engine.cache_info()["size"] == len(history) + 1


def test_dynamic_s2_image_and_video_match_torch(
    ort_engine, tiny_model, tiny_tokenizer, make_frames
):
    torch_engine = Engine(TorchBackend(tiny_model), tiny_model.config, tiny_tokenizer)
    image = make_frames(1, height=100, width=150)[0]
    ours = ort_engine.generate("Describe the scene.", images=[image], max_new_tokens=6)
    ref = torch_engine.generate("Describe the scene.", images=[image], max_new_tokens=6)
    assert ours.token_ids == ref.token_ids
    assert ours.timings["vit_passes"] == ref.timings["vit_passes"] > 5  # all S2 tiles
    video = make_frames(8)
    ours = ort_engine.generate("What happens?", video=video, max_new_tokens=6)
    ref = torch_engine.generate("What happens?", video=video, max_new_tokens=6)
    assert ours.token_ids == ref.token_ids


def test_quantized_export_matches_the_simulated_torch_model(
    quant_export, quantized, tiny_tokenizer, make_frames
):
    model, state = quantized
    engine = Engine.from_pretrained(quant_export, backend="onnxruntime")
    frames = make_frames(8)
    ours = engine.navigate(INSTRUCTION, frames, max_new_tokens=6, output_logits=True)
    with simulated(model, state):
        ref = Engine(TorchBackend(model), model.config, tiny_tokenizer).navigate(
            INSTRUCTION, frames, max_new_tokens=6, output_logits=True
        )
    assert ours.token_ids == ref.token_ids
    torch.testing.assert_close(ours.logits, ref.logits, rtol=0, atol=1e-3)


def test_threads_size_every_onnxruntime_session_and_torch(fp32_export):
    engine = Engine.from_pretrained(fp32_export, backend="onnxruntime", threads=1)
    pools = {
        name: session.get_session_options().intra_op_num_threads
        for name, session in engine.backend.sessions.items()
    }
    assert pools == {name: 1 for name in engine.backend.sessions} and pools
    before = torch.get_num_threads()
    try:
        Engine.from_pretrained("tiny", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        Engine.from_pretrained("tiny", threads=-1)


def test_export_backend_needs_an_export_folder(tmp_path):
    with pytest.raises(ValueError, match="not an `nvila-core export` folder"):
        Engine.from_pretrained(tmp_path, backend="onnxruntime")


ANSWERS = [
    "The next action is move forward 75 cm.",
    "The next action is turn left 30 degrees.",
    "The next action is turn right 15 degrees.",
    "The next action is stop.",
]


def test_choosing_among_answers_matches_torch(ort_engine, tiny_model, tiny_tokenizer, make_frames):
    torch_engine = Engine(TorchBackend(tiny_model), tiny_model.config, tiny_tokenizer)
    history = make_frames(5)
    keys = list(range(len(history)))
    ours = ort_engine.navigate(INSTRUCTION, history, keys, answers=ANSWERS)
    ref = torch_engine.navigate(INSTRUCTION, history, keys, answers=ANSWERS)
    torch.testing.assert_close(
        torch.tensor(ours.answer_log_probs), torch.tensor(ref.answer_log_probs), rtol=0, atol=1e-4
    )
    best = max(range(len(ANSWERS)), key=ref.answer_log_probs.__getitem__)
    assert ours.text == ref.text == ANSWERS[best] and ours.stopped_by == "choice"
    # the score is the sum over the answer's tokens and its end token
    assert all(p < 0 for p in ref.answer_log_probs)
    assert ref.token_ids == torch_engine.processor.answer_ids(ANSWERS[best])[:-1]
    assert ours.timings["answers"] == len(ANSWERS) and ours.timings["prompt_tokens"] > 0


def test_choosing_over_a_growing_history_reuses_the_prompt_and_matches_a_full_prefill(
    ort_engine, tiny_model, tiny_tokenizer, make_frames
):
    """The one-call choice on onnxruntime continues the last prompt's KV cache where the new
    prompt begins the same way; its scores equal torch's with every prompt prefilled whole."""
    ort_engine.clear_cache()
    full_prefill = TorchBackend(tiny_model)
    full_prefill.prompt_prefix.enabled = False
    torch_engine = Engine(full_prefill, tiny_model.config, tiny_tokenizer)
    history = make_frames(11)
    for step in range(8, len(history) + 1):
        frames, keys = history[:step], list(range(step))
        ours = ort_engine.navigate(INSTRUCTION, frames, keys, answers=ANSWERS)
        ref = torch_engine.navigate(INSTRUCTION, frames, keys, answers=ANSWERS)
        torch.testing.assert_close(
            torch.tensor(ours.answer_log_probs),
            torch.tensor(ref.answer_log_probs),
            rtol=0,
            atol=1e-4,
        )
        assert ours.text == ref.text
        assert (ours.timings["reused_prompt_tokens"] > 0) == (step > 8)
        assert ref.timings["reused_prompt_tokens"] == 0


@contextlib.contextmanager
def _llm_calls(backend):
    """The (rows, tokens) of every call to `backend`'s LLM session while the block runs. The
    backend's kept prompt is dropped first, so the block's first call feeds its whole prompt."""
    backend.prompt_prefix.clear()
    session, shapes = backend.sessions["llm"], []

    class Counting:
        def run(self, names, feed):
            shapes.append(tuple(feed["inputs_embeds"].shape[:2]))
            return session.run(names, feed)

    backend.sessions["llm"] = Counting()
    try:
        yield shapes
    finally:
        backend.sessions["llm"] = session


def test_choosing_runs_one_llm_call_on_onnxruntime(ort_engine, make_frames):
    """The prompt and every answer's tokens go in one call (the answers' prefix tree after the
    prompt), and the scores equal the torch model's two forwards."""
    history = make_frames(3)
    with _llm_calls(ort_engine.backend) as shapes:
        chosen = ort_engine.navigate(INSTRUCTION, history, answers=ANSWERS)
    assert len(shapes) == 1 and shapes[0][0] == 1
    tree = AnswerTree.build([ort_engine.processor.answer_ids(a) for a in ANSWERS])
    assert shapes[0][1] == chosen.timings["prompt_tokens"] + len(tree)
    assert len(tree) < sum(len(ort_engine.processor.answer_ids(a)) - 1 for a in ANSWERS)


@pytest.mark.parametrize("keep", ["all fed", "one"])
def test_scoring_after_a_decode_continues_its_cache_like_a_fresh_prefill(
    ort_engine, tiny_model, tiny_tokenizer, make_frames, keep
):
    """`score_after` on a decode's KV cache (whole, or cut back to its first generated token)
    scores as a fresh prefill of the same tokens, on onnxruntime and on torch."""
    extra = tiny_tokenizer(" Yes. The next action is", add_special_tokens=False).input_ids
    continuations = [ort_engine.processor.answer_ids(a) for a in ANSWERS]
    frames = make_frames(3)
    torch_engine = Engine(TorchBackend(tiny_model), tiny_model.config, tiny_tokenizer)
    for engine in (ort_engine, torch_engine):
        inputs = engine.processor.navigation(INSTRUCTION, frames)
        with torch.inference_mode():
            embeds = engine._encode_media(inputs.media).embeds
            decoded = engine.backend.decode(inputs, embeds, [], 4, False)
            # four tokens generated without a stop token: the last was never fed
            assert len(decoded.token_ids) == 4 and decoded.cached == decoded.prompt_tokens + 3
            k = 3 if keep == "all fed" else 1
            said = ModelInputs(
                [*inputs.input_ids, *decoded.token_ids[:k], *extra], inputs.media, ""
            )
            fresh = engine.backend.score(said, embeds, continuations)
            after = engine.backend.score_after(decoded, k, extra, continuations)
        assert after.prompt_tokens == fresh.prompt_tokens
        torch.testing.assert_close(
            torch.tensor(after.log_probs), torch.tensor(fresh.log_probs), rtol=0, atol=1e-4
        )


def test_scoring_after_a_decode_needs_its_cache_and_fed_tokens(ort_engine, make_frames):
    inputs = ort_engine.processor.navigation(INSTRUCTION, make_frames(2))
    embeds = ort_engine._encode_media(inputs.media).embeds
    decoded = ort_engine.backend.decode(inputs, embeds, [], 2, False)
    continuations = [[5, 6]]
    with pytest.raises(ValueError, match="keep must be in"):
        ort_engine.backend.score_after(decoded, 2, [7], continuations)
    with pytest.raises(ValueError, match="at least one token"):
        ort_engine.backend.score_after(decoded, 1, [], continuations)
    decoded.cache = None
    with pytest.raises(ValueError, match="no KV cache"):
        ort_engine.backend.score_after(decoded, 1, [7], continuations)


class _Saying:
    """An export backend whose generation says `ids`, as a trained statement model would; its
    scoring is the backend's own."""

    def __init__(self, backend, ids):
        self.backend, self.ids = backend, ids

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def decode(self, inputs, media_embeds, stop_token_ids, max_new_tokens, output_logits):
        return Decoded(self.ids, "stop_token", prefill_ms=1.0, decode_ms=2.0, prompt_tokens=9)


def test_a_statement_is_prefilled_once_and_chosen_after_like_torch(
    ort_engine, tiny_model, tiny_tokenizer, make_frames
):
    """A nav_statement model's answers share its ~25-token statement: on onnxruntime it joins the
    prefill instead of being walked token by token down the answers' tree."""
    config = dataclasses.replace(
        tiny_model.config, nav_prompt="compact", nav_history="recent", nav_statement=True
    )
    said = "Close ahead: the red chair. Is the red chair close ahead? Yes."
    ids = tiny_tokenizer(f"{said} stop", add_special_tokens=False).input_ids
    answers = ["move forward 75 cm", "turn left 30 degrees", "turn right 15 degrees", "stop"]
    ours_engine = Engine(_Saying(ort_engine.backend, ids), config, tiny_tokenizer)
    ref_engine = Engine(_Saying(TorchBackend(tiny_model), ids), config, tiny_tokenizer)
    frames = make_frames(3)
    with _llm_calls(ort_engine.backend) as shapes:
        ours = ours_engine.navigate("Stop at the red chair.", frames, answers=answers)
    calls = [length for _, length in shapes]
    ref = ref_engine.navigate("Stop at the red chair.", frames, answers=answers)
    assert ours.statement == ref.statement == said and ours.text == ref.text
    torch.testing.assert_close(
        torch.tensor(ours.answer_log_probs), torch.tensor(ref.answer_log_probs), rtol=0, atol=1e-4
    )
    # one call: the prefill that holds the statement, then the answers' prefix tree
    assert len(calls) == 1 and calls[0] > ours.timings["prompt_tokens"]
    assert ours.timings["prompt_tokens"] > len(ids) - 1


def test_names_statement_is_begun_and_cut_at_its_question_like_torch(
    ort_engine, tiny_model, tiny_tokenizer, make_frames
):
    """Under nav_verdict: names the statement's opening joins the prompt and generation stops
    at the question mark, on onnxruntime as on torch: the same tokens, statement and choice."""
    config = dataclasses.replace(
        tiny_model.config,
        nav_prompt="compact",
        nav_history="recent",
        nav_statement=True,
        nav_verdict="names",
    )
    ours_engine = Engine(ort_engine.backend, config, tiny_tokenizer)
    ref_engine = Engine(TorchBackend(tiny_model), config, tiny_tokenizer)
    answers = ["move forward 75 cm", "turn left 30 degrees", "stop"]
    frames = make_frames(3)
    with _llm_calls(ort_engine.backend) as shapes:
        ours = ours_engine.navigate("Stop at the red chair.", frames, answers=answers)
    ref = ref_engine.navigate("Stop at the red chair.", frames, answers=answers)
    assert (ours.statement, ours.text) == (ref.statement, ref.text)
    assert ours.timings["statement_tokens"] == ref.timings["statement_tokens"] >= 1
    torch.testing.assert_close(
        torch.tensor(ours.answer_log_probs), torch.tensor(ref.answer_log_probs), rtol=0, atol=1e-4
    )
    inputs = ours_engine.processor.navigation("Stop at the red chair.", frames)
    with _llm_calls(ort_engine.backend) as plain:
        ours_engine.run(inputs, max_new_tokens=1)
    opening = ours_engine.processor.answer_ids("Close ahead:")[:-1]
    assert shapes[0][1] == plain[0][1] + len(opening)  # the statement's prefill holds the opening
