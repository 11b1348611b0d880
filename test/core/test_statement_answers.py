"""nav_statement models: the answer states something before the action (navila-nano: what is
close ahead, and whether it is the goal), in training data, checkpoints and the engine's choice."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from nvila_core.model.checkpoint import load_checkpoint, save_checkpoint
from nvila_core.model.configuration import ConfigError, NVILAConfig
from nvila_core.model.generation import Decoded
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.model.prompting import (
    asked_name,
    close_ahead_name,
    names_verdict,
    statement_answer,
    statement_of,
)
from nvila_core.model.tokenizer import build_tokenizer
from nvila_core.runtime.engine import STATEMENT_MAX_TOKENS, Engine, TorchBackend
from nvila_core.train.data import DataError, NavDataset, read_episodes
from test.helpers.compact_models import ScriptedAnswer, compact_model
from test.helpers.episode_folders import write_episode_dataset

ANSWERS = ["move forward 75 cm", "turn left 30 degrees", "turn right 30 degrees", "stop"]
SAID = "Close ahead: the red chair. Is the red chair close ahead? Yes."
NANO = Path(__file__).resolve().parents[2] / "models" / "navila-nano"


def statement_config(**changes) -> NVILAConfig:
    fields = {
        "num_video_frames": 3,
        "nav_prompt": "compact",
        "nav_history": "recent",
        "nav_previous_actions": 2,
        "nav_statement": True,
    }
    return dataclasses.replace(NVILAConfig.preset("tiny"), **{**fields, **changes})


def test_statement_is_written_and_read_back():
    answer = statement_answer(SAID, "stop")
    assert answer == f"{SAID} stop"
    assert statement_of(answer) == SAID
    assert statement_of("Close ahead: nothing. move forward 75 cm") == "Close ahead: nothing."
    assert statement_of("move forward 75 cm") is None and statement_of(".") == "."
    for bad in ("", "Close ahead: the red chair", "a.\nb."):
        with pytest.raises(ValueError, match="statement"):
            statement_answer(bad, "stop")


def test_config_needs_the_compact_prompt_and_checkpoints_keep_it(tmp_path):
    with pytest.raises(ConfigError, match="nav_statement needs nav_prompt: compact"):
        dataclasses.replace(NVILAConfig.preset("tiny"), nav_statement=True)
    config = statement_config()
    tokenizer = build_tokenizer(config.llm_config["vocab_size"], config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt")[0].config.nav_statement
    model.config = dataclasses.replace(config, nav_statement=False)
    save_checkpoint(model, tokenizer, tmp_path / "plain")
    assert not load_checkpoint(tmp_path / "plain")[0].config.nav_statement


def test_training_answers_state_first(tmp_path):
    root = write_episode_dataset(tmp_path / "eps", episodes=1, actions=4, seed=0)
    meta_path = root / "ep0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    said = ["Close ahead: nothing. Is the red chair close ahead? No."] * 3 + [SAID]
    for action, statement in zip(meta["actions"], said, strict=True):
        action["statement"] = statement
    meta_path.write_text(json.dumps(meta))
    (samples,) = read_episodes(root, "eps", num_frames=3, history="recent")
    assert [s.statement for s in samples] == said
    config = statement_config()
    tokenizer = build_tokenizer(512, config.chat_template)
    example = NavDataset(samples, NVILAProcessor(config, tokenizer))[3]
    assert example.answer == f"{SAID} stop"
    assert tokenizer.decode(example.labels[example.labels >= 0]).startswith(example.answer)
    # a model without the option keeps the bare action, whatever the episode records
    plain = NVILAProcessor(statement_config(nav_statement=False), tokenizer)
    assert NavDataset(samples, plain)[3].answer == "stop"
    # an episode without statements is refused, naming the fix
    bare = write_episode_dataset(tmp_path / "bare", episodes=1, actions=2, seed=1)
    (old,) = read_episodes(bare, "bare", num_frames=3, history="recent")
    with pytest.raises(DataError, match="nvila-sim statements"):
        NavDataset(old, NVILAProcessor(config, tokenizer))[0]


def test_engine_chooses_the_action_after_its_own_statement(make_frames):
    model, config, tokenizer = compact_model(nav_statement=True)
    frames = make_frames(3)
    # what the model generates before its action is the statement the answers are scored after
    engine = Engine(
        ScriptedAnswer(model, tokenizer, f"{SAID} move forward 25 cm"), config, tokenizer
    )
    inputs = engine.processor.navigation("stop at the red chair.", frames)
    result = engine.navigate("stop at the red chair.", frames, answers=ANSWERS)
    assert result.statement == SAID
    assert result.timings["statement_missing"] == 0 and result.timings["statement_ms"] == 3.0
    # the statement is prefilled once with the prompt: the same ranking as scoring every
    # "statement answer" whole, each score lower by the statement's own log-probability
    whole = engine.choose(inputs, [f"{SAID} {a}" for a in ANSWERS]).answer_log_probs
    statement_logp = np.subtract(whole, result.answer_log_probs)
    assert statement_logp == pytest.approx([statement_logp[0]] * len(ANSWERS), abs=1e-4)
    assert statement_logp[0] < -1.0
    assert result.text == ANSWERS[int(np.argmax(whole))]
    assert result.timings["prompt_tokens"] > engine.choose(inputs, ANSWERS).timings["prompt_tokens"]
    # generated, not chosen: the text is the action, the statement apart
    generated = engine.navigate("stop at the red chair.", frames)
    assert (generated.statement, generated.text) == (SAID, "move forward 25 cm")
    # a generation without a statement: the answers are scored alone, and that is counted
    engine = Engine(ScriptedAnswer(model, tokenizer, "move forward 25 cm"), config, tokenizer)
    result = engine.navigate("stop at the red chair.", frames, answers=ANSWERS)
    assert result.statement is None and result.timings["statement_missing"] == 1
    expected = engine.choose(inputs, ANSWERS)
    assert result.answer_log_probs == pytest.approx(expected.answer_log_probs)


def test_names_verdict_says_yes_exactly_for_the_same_name():
    same = "Close ahead: the red chair. Is the Red Chair close ahead? No."
    assert names_verdict(same) == "Close ahead: the red chair. Is the Red Chair close ahead? Yes."
    other = "Close ahead: the blue chair. Is the red chair close ahead? Yes."
    assert names_verdict(other) == other.replace("Yes.", "No.")
    nothing = "Close ahead: nothing. Is nothing close ahead? Yes."
    assert names_verdict(nothing).endswith("No.")
    assert names_verdict(SAID) == SAID
    # a question without its verdict gets one
    assert names_verdict("Close ahead: the red chair. Is the red chair close ahead?") == SAID
    for unreadable in ("Close ahead: the red chair.", "Is the red chair close ahead? Yes.", ""):
        assert names_verdict(unreadable) is None


def test_the_name_a_statement_says_is_close_ahead():
    assert close_ahead_name(SAID) == "the red chair"
    door = "Close ahead: the blue door. Is the red chair close ahead? No."
    assert close_ahead_name(door) == "the blue door"
    assert close_ahead_name("Close ahead: the blue door. Is the red chair close ahead?") == (
        "the blue door"
    )
    for nameless in ("Close ahead: nothing. Is the red chair close ahead? No.", "", None):
        assert close_ahead_name(nameless) is None
    assert close_ahead_name("Close ahead: the red chair.") is None


def test_the_name_a_statement_asks_about():
    assert asked_name(SAID) == "the red chair"
    assert asked_name("Close ahead: nothing. Is the blue potted plant close ahead? No.") == (
        "the blue potted plant"
    )
    assert asked_name("Close ahead: the blue door. Is the pink table close ahead?") == (
        "the pink table"
    )
    for other in ("Close ahead: the red chair.", "", None):
        assert asked_name(other) is None


def test_config_needs_a_statement_for_the_names_verdict(tmp_path):
    with pytest.raises(ConfigError, match="nav_verdict: names needs nav_statement"):
        statement_config(nav_statement=False, nav_verdict="names")
    with pytest.raises(ConfigError, match="nav_verdict must be one of"):
        statement_config(nav_verdict="vote")
    config = statement_config(nav_verdict="names")
    tokenizer = build_tokenizer(config.llm_config["vocab_size"], config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt")[0].config.nav_verdict == "names"


class _SaysThenActs(ScriptedAnswer):
    """Says `text`, and `then` when the prompt already ends with a whole statement."""

    def __init__(self, model, tokenizer, text, then):
        super().__init__(model, tokenizer, text)
        self.tokenizer = tokenizer
        self.then = tokenizer(then, add_special_tokens=False).input_ids

    def decode(self, inputs, media_embeds, stop_token_ids, max_new_tokens, output_logits):
        if not self.tokenizer.decode(inputs.input_ids[-4:]).endswith(("Yes.", "No.")):
            return super().decode(inputs, media_embeds, stop_token_ids, max_new_tokens, False)
        self.calls.append((list(inputs.input_ids), list(stop_token_ids)))
        return Decoded(self.then, "stop_token", prefill_ms=1.0, decode_ms=2.0, prompt_tokens=9)


def test_the_names_verdict_replaces_the_models_and_the_action_follows_it(make_frames):
    model, config, tokenizer = compact_model(nav_statement=True, nav_verdict="names")
    frames, instruction = make_frames(3), "stop at the red chair."
    wrong = "Close ahead: the red chair. Is the red chair close ahead? No."
    right = wrong.replace("No.", "Yes.")
    prompt = Engine(TorchBackend(model), config, tokenizer).processor.navigation(
        instruction, frames
    )
    backend = _SaysThenActs(model, tokenizer, f"{wrong} move forward 25 cm", " stop")
    engine = Engine(backend, config, tokenizer)
    # chosen: the engine writes the statement's opening and its verdict, the model the names
    # between them; the answers are scored after the statement with the names' verdict
    chosen = engine.navigate(instruction, frames, answers=ANSWERS)
    assert chosen.statement == right and "verdict_changed" not in chosen.timings
    ((said_after, stops),) = backend.calls
    opening = tokenizer("Close ahead:", add_special_tokens=False).input_ids
    question_mark = tokenizer("?", add_special_tokens=False).input_ids
    assert said_after == prompt.input_ids + opening and question_mark[0] in stops
    generated = tokenizer(" the red chair. Is the red chair close ahead", add_special_tokens=False)
    assert chosen.timings["statement_tokens"] == len(generated.input_ids)
    whole = engine.choose(prompt, [f"{right} {a}" for a in ANSWERS]).answer_log_probs
    assert chosen.text == ANSWERS[int(np.argmax(whole))]
    # generated: the action is generated again, after the corrected statement
    backend.calls.clear()
    generated = engine.navigate(instruction, frames)
    assert (generated.statement, generated.text) == (right, "stop")
    assert len(backend.calls[0][0]) == len(prompt.input_ids) < len(backend.calls[1][0])
    assert generated.timings["verdict_changed"] == 1
    # a right verdict is kept, and the model's own verdict is kept under nav_verdict: model
    backend = _SaysThenActs(model, tokenizer, f"{right} stop", " stop")
    kept = Engine(backend, config, tokenizer).navigate(instruction, frames)
    assert (kept.statement, kept.text, kept.timings["verdict_changed"]) == (right, "stop", 0)
    plain = dataclasses.replace(config, nav_verdict="model")
    backend = _SaysThenActs(model, tokenizer, f"{wrong} stop", " stop")
    assert Engine(backend, plain, tokenizer).navigate(instruction, frames).statement == wrong
    backend.calls.clear()
    chosen = Engine(backend, plain, tokenizer).navigate(instruction, frames, answers=ANSWERS)
    assert chosen.statement == wrong and backend.calls[0][0] == prompt.input_ids
    # a model that leaves the form: what it said up to its last "." is the statement
    backend = _SaysThenActs(model, tokenizer, "Close ahead: the red chair. stop", " stop")
    odd = Engine(backend, config, tokenizer).navigate(instruction, frames, answers=ANSWERS)
    assert odd.statement == "Close ahead: the red chair."


@pytest.mark.skipif(not (NANO / "config.json").is_file(), reason="models/navila-nano is absent")
def test_navila_nano_states_the_same_when_the_engine_writes_the_form():
    """The shipped model's statement, begun by the engine and cut at its "?", is the one its own
    full greedy generation writes, with the names' verdict, in fewer generated tokens."""
    engine = Engine.from_pretrained(NANO)
    assert engine.config.nav_statement and engine.config.nav_verdict == "names"
    rng = np.random.default_rng(0)
    instructions = [
        "Walk out of the bedroom and stop at the blue potted plant.",
        "Turn left, go past the sofa and stop next to the red chair.",
        "Go straight into the kitchen. Stop in front of the yellow shelf.",
    ]
    for k, instruction in enumerate(instructions * 2):
        frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(3 + k)]
        if k % 2:
            frames[-1] = np.full((96, 128, 3), (200, 40, 40), np.uint8)
        previous = ["move forward 75 cm", "turn left 30 degrees"][: k % 3]
        inputs = engine.processor.navigation(instruction, frames, previous_actions=previous)
        full = engine.run(inputs, STATEMENT_MAX_TOKENS)
        expected = names_verdict(statement_of(full.text))
        assert expected is not None, full.text
        chosen = engine.navigate(instruction, frames, answers=ANSWERS, previous_actions=previous)
        assert chosen.statement == expected
        assert chosen.timings["statement_tokens"] < full.timings["new_tokens"]


class _NoCache(TorchBackend):
    """Torch decoding that keeps no KV cache: the engine prefills the statement again."""

    def decode(self, *args):
        decoded = super().decode(*args)
        decoded.cache = None
        return decoded


@pytest.mark.skipif(not (NANO / "config.json").is_file(), reason="models/navila-nano is absent")
def test_navila_nano_chooses_from_its_statements_cache_as_from_a_new_prefill():
    """The shipped model's choice continues the KV cache its statement left, and ranks the
    answers as a fresh prefill of prompt and statement does."""
    engine = Engine.from_pretrained(NANO)
    fresh = Engine(_NoCache(engine.backend.model), engine.config, engine.tokenizer)
    rng = np.random.default_rng(1)
    for k in range(4):
        frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2 + k)]
        if k % 2:
            frames[-1] = np.full((96, 128, 3), (40, 40, 200), np.uint8)
        instruction = "Leave the hallway and stop next to the blue potted plant."
        cached = engine.navigate(instruction, frames, answers=ANSWERS)
        again = fresh.navigate(instruction, frames, answers=ANSWERS)
        assert (cached.timings["statement_cache"], again.timings["statement_cache"]) == (1, 0)
        assert (cached.statement, cached.text) == (again.statement, again.text)
        assert cached.timings["prompt_tokens"] == again.timings["prompt_tokens"]
        np.testing.assert_allclose(cached.answer_log_probs, again.answer_log_probs, atol=1e-4)
