"""The compact navigation format of small models: recent-frame history, previous actions in the
prompt, bare action answers; the same inputs in training data, the processor and checkpoints."""

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image

from nvila_core.model.checkpoint import load_checkpoint, save_checkpoint
from nvila_core.model.configuration import ConfigError, NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.model.prompting import (
    action_phrase,
    compact_navigation_prompt,
    merge_action_runs,
    navigation_answer,
    sample_recent_indices,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN, build_tokenizer
from nvila_core.train.data import NavDataset, read_episodes
from test.helpers.episode_folders import write_episode_dataset


def compact_config(**changes) -> NVILAConfig:
    config = NVILAConfig.preset("tiny")
    fields = {
        "num_video_frames": 5,
        "nav_prompt": "compact",
        "nav_history": "recent",
        "nav_previous_actions": 3,
    }
    return dataclasses.replace(config, **{**fields, **changes})


def test_recent_indices_keep_their_slots():
    assert sample_recent_indices(1, 5) == [0, None, None, None, 0]
    assert sample_recent_indices(2, 5) == [0, None, None, None, 1]
    assert sample_recent_indices(3, 5) == [0, None, None, 1, 2]
    assert sample_recent_indices(9, 5) == [0, 5, 6, 7, 8]
    assert sample_recent_indices(9, 2) == [0, 8]
    with pytest.raises(ValueError):
        sample_recent_indices(0, 5)


def test_compact_prompt_and_answers():
    text = compact_navigation_prompt("Walk to the sofa.", 2, ["turn left 30 degrees"])
    assert (
        text
        == f"{IMAGE_TOKEN}\n{IMAGE_TOKEN}\nTask: Walk to the sofa.\nDone: turn left 30 degrees\nNext?"
    )
    assert compact_navigation_prompt("Go.", 1, []).endswith("Done: nothing\nNext?")
    assert "Done" not in compact_navigation_prompt("Go.", 1, None)
    assert navigation_answer("move forward 75 cm", "compact") == "move forward 75 cm"
    sentence = navigation_answer("move forward 75 cm")
    assert sentence == "The next action is move forward 75 cm."
    assert action_phrase(sentence) == action_phrase("move forward 75 cm") == "move forward 75 cm"


def test_merged_runs_sum_consecutive_moves_and_same_side_turns():
    done = ["turn right 45 degrees"] * 3 + ["turn right 15 degrees", "move forward 75 cm"]
    done += ["move forward 50 cm", "turn left 30 degrees", "turn right 15 degrees", "stop"]
    assert merge_action_runs(done) == [
        "turn right 150 degrees",
        "move forward 125 cm",
        "turn left 30 degrees",
        "turn right 15 degrees",
        "stop",
    ]
    assert merge_action_runs(["stop", "stop"]) == ["stop", "stop"]
    assert merge_action_runs([]) == []


def test_config_rejects_inconsistent_navigation_formats():
    with pytest.raises(ConfigError, match="nav_prompt"):
        compact_config(nav_prompt="short")
    with pytest.raises(ConfigError, match="nav_previous_actions"):
        dataclasses.replace(NVILAConfig.preset("tiny"), nav_previous_actions=2)
    with pytest.raises(ConfigError, match="nav_merge_actions"):
        compact_config(nav_previous_actions=0, nav_merge_actions=True)
    with pytest.raises(ConfigError, match="nav_initial_turn"):
        compact_config(nav_initial_turn="instruction")


def test_processor_shows_first_latest_and_current_frames_and_the_last_actions():
    config = compact_config()
    processor = NVILAProcessor(config, build_tokenizer(512, config.chat_template))
    frames = [np.full((24, 32, 3), 20 * i, np.uint8) for i in range(7)]
    done = ["turn left 45 degrees", "move forward 75 cm", "move forward 50 cm", "stop"]
    inputs = processor.navigation(
        "walk to the sofa.", frames, list(range(7)), previous_actions=done
    )
    assert [item.keys[0] for item in inputs.media] == [0, 3, 4, 5, 6]
    shown = [float(item.pixel_values.mean()) for item in inputs.media]
    assert shown == sorted(shown)  # frames 0, 3, 4, 5, 6: brighter and brighter
    assert "Done: move forward 75 cm, move forward 50 cm, stop" in inputs.prompt_text
    assert "Task: Walk to the sofa." in inputs.prompt_text
    young = processor.navigation("go.", frames[:1], [0], previous_actions=[])
    assert [item.keys and item.keys[0] for item in young.media] == [0, None, None, None, 0]
    assert "Done: nothing" in young.prompt_text


def test_processor_states_the_latest_merged_runs():
    config = compact_config(nav_merge_actions=True, nav_previous_actions=2)
    processor = NVILAProcessor(config, build_tokenizer(512, config.chat_template))
    frames = [np.zeros((24, 32, 3), np.uint8)]
    done = ["turn left 45 degrees", "move forward 75 cm"] + ["turn right 45 degrees"] * 4
    inputs = processor.navigation("go.", frames, previous_actions=done)
    # Six steps past the window of two: the runs still say the turn has gone 180 degrees.
    assert "Done: move forward 75 cm, turn right 180 degrees\nNext?" in inputs.prompt_text


def test_training_samples_match_what_the_processor_builds_at_inference(tmp_path):
    root = write_episode_dataset(tmp_path / "eps", episodes=1, actions=6, seed=0)
    meta_path = root / "ep0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["actions"][1]["executed"] = "turn right 45 degrees"
    meta_path.write_text(json.dumps(meta))
    (samples,) = read_episodes(root, "eps", num_frames=5, history="recent")
    assert samples[4].previous_actions == (
        "move forward 75 cm",
        "turn right 45 degrees",  # what was driven, not the label
        "turn right 15 degrees",
        "stop",
    )
    names = [None if p is None else p.name for p in samples[4].frame_paths]
    assert names == ["000000.png", "000001.png", "000002.png", "000003.png", "000004.png"]
    config = compact_config()
    tokenizer = build_tokenizer(512, config.chat_template)
    processor = NVILAProcessor(config, tokenizer)
    example = NavDataset(samples, processor)[4]
    assert example.answer == "move forward 75 cm"
    assert tokenizer.decode(example.labels[example.labels >= 0]).startswith("move forward 75 cm")
    frames = [Image.open(root / "ep0" / "frames" / f"{i:06d}.png").convert("RGB") for i in range(5)]
    inference = processor.navigation(
        meta["instruction"], frames, previous_actions=samples[4].previous_actions
    )
    assert inference.input_ids == example.input_ids[: example.prompt_length].tolist()


def test_checkpoints_keep_the_navigation_format(tmp_path):
    config = compact_config()
    tokenizer = build_tokenizer(config.llm_config["vocab_size"], config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert (loaded.config.nav_prompt, loaded.config.nav_history) == ("compact", "recent")
    assert loaded.config.nav_previous_actions == 3
    assert loaded.config.num_video_frames == 5
    assert not loaded.config.nav_merge_actions
    model.config = dataclasses.replace(config, nav_merge_actions=True)
    save_checkpoint(model, tokenizer, tmp_path / "merged")
    assert load_checkpoint(tmp_path / "merged")[0].config.nav_merge_actions
    assert loaded.config.nav_initial_turn == "model"
    model.config = dataclasses.replace(config, nav_initial_turn="stated")
    save_checkpoint(model, tokenizer, tmp_path / "stated")
    assert load_checkpoint(tmp_path / "stated")[0].config.nav_initial_turn == "stated"


def test_merged_runs_read_the_phrases_the_robot_side_writes():
    # The executed actions come from nvila_nav's grammar (Action.to_text), not from this module.
    from nvila_nav.actions import quantize_forward, quantize_turn

    done = [a.to_text() for a in quantize_turn(math.radians(-120)) + quantize_forward(1.25)]
    done += [a.to_text() for a in quantize_turn(math.radians(30))]
    assert merge_action_runs(done) == [
        "turn right 120 degrees",
        "move forward 125 cm",
        "turn left 30 degrees",
    ]
