"""NVILAProcessor: media placement, per-mode media items and their token positions."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.processing import MediaItem, ModelInputs, NVILAProcessor
from nvila_core.model.prompting import (
    IMAGE_TOKEN_INDEX,
    apply_chat_template,
    navigation_prompt,
    stop_token_ids,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, build_tokenizer, media_token_ids

TINY = NVILAConfig.preset("tiny")  # dynamic_s2, scales 56/112/168, tile 56
TINY_DYNAMIC = dataclasses.replace(
    TINY, image_aspect_ratio="dynamic", s2_scales=[56], mm_projector_type="mlp_downsample_3x3_fix"
)
TINY_NAVILA = dataclasses.replace(
    TINY,
    architecture="vila1.5",
    chat_template="llama_3",
    image_aspect_ratio="resize",
    s2_scales=[56],
    llm_config={**TINY.llm_config, "model_type": "llama"},
)
S = TINY.tile_size


def picture(width: int = 120, height: int = 90, value: int = 0) -> Image.Image:
    rng = np.random.default_rng(value)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def qwen():
    return build_tokenizer(TINY.llm_config["vocab_size"], "qwen2")


@pytest.fixture(scope="module")
def proc(qwen):
    return NVILAProcessor(TINY, qwen)


def media_positions(inputs: ModelInputs, ids: set[int]) -> list[int]:
    return [i for i, t in enumerate(inputs.input_ids) if t in ids]


def test_dynamic_s2_image_is_one_item_with_block_size(proc, qwen):
    out = proc("<image>Describe the scene.", images=[picture(120, 90)])
    assert len(out.media) == 1
    item = out.media[0]
    # 4:3 image -> last scale grid 4 cols x 3 rows; tiles 1 + 4 + 12.
    assert item.kind == "image" and item.block_size == (3, 4) and item.keys is None
    assert item.pixel_values.shape == (17, 3, S, S)
    image_id = media_token_ids(qwen)[IMAGE_TOKEN]
    assert out.input_ids.count(image_id) == 1
    expected_text = apply_chat_template("qwen2", "<image>Describe the scene.")
    assert out.prompt_text == expected_text
    assert out.input_ids == qwen(expected_text).input_ids


def test_media_go_before_the_text_without_placeholders(proc, qwen):
    out = proc("Describe the scene.", images=[picture()])
    assert "<|im_start|>user\n<image>Describe the scene.<|im_end|>" in out.prompt_text
    both = proc("What happens?", images=[picture(), picture(value=1)], video=[picture()] * 4)
    assert "<|im_start|>user\n<image><image><vila/video>What happens?" in both.prompt_text
    assert [m.kind for m in both.media] == ["image", "image", "video"]
    ids = media_token_ids(qwen)
    assert [both.input_ids[i] for i in media_positions(both, set(ids.values()))] == [
        ids[IMAGE_TOKEN],
        ids[IMAGE_TOKEN],
        ids[VIDEO_TOKEN],
    ]


def test_several_images_are_single_resized_tiles(proc):
    out = proc("<image> vs <image>", images=[picture(120, 90), picture(50, 200, 1)])
    assert [(m.kind, tuple(m.pixel_values.shape), m.block_size) for m in out.media] == [
        ("image", (1, 3, S, S), None),
        ("image", (1, 3, S, S), None),
    ]
    assert not torch.equal(out.media[0].pixel_values, out.media[1].pixel_values)


def test_images_then_frames_fill_placeholders_in_order(proc):
    out = proc(
        "Image <image>, frames <image> <image>.",
        images=[picture()],
        frames=[picture(value=1), picture(value=2)],
        frame_keys=["f1", "f2"],
    )
    assert [m.kind for m in out.media] == ["image", "frame", "frame"]
    # An image next to frames is not the prompt's only image: one resized tile.
    assert out.media[0].pixel_values.shape == (1, 3, S, S) and out.media[0].block_size is None
    assert [m.keys for m in out.media] == [None, ["f1"], ["f2"]]
    expected = proc.image_processor.process_frames([picture(value=1), picture(value=2)])
    assert torch.equal(torch.cat([m.pixel_values for m in out.media[1:]]), expected)


def test_frames_get_one_item_and_one_position_each(proc, qwen):
    frames = [picture(64, 48, v) for v in range(3)]
    out = proc("<image>\n<image>\n<image>\nWhere am I?", frames=frames, frame_keys=[10, 11, None])
    assert [(m.kind, tuple(m.pixel_values.shape)) for m in out.media] == [
        ("frame", (1, 3, S, S))
    ] * 3
    assert [m.keys for m in out.media] == [[10], [11], None]
    image_id = media_token_ids(qwen)[IMAGE_TOKEN]
    newline = qwen("\n").input_ids[0]
    positions = media_positions(out, {image_id})
    assert len(positions) == 3
    assert all(out.input_ids[p + 1] == newline for p in positions)


def test_video_item(proc, qwen):
    video = [picture(80, 60, v) for v in range(4)]
    out = proc("Summarise <vila/video> briefly.", video=video, video_keys=["a", "b", "c", "d"])
    (item,) = out.media
    assert item.kind == "video" and item.keys == ["a", "b", "c", "d"]
    assert torch.equal(item.pixel_values, proc.image_processor.process_frames(video))
    assert out.input_ids.count(media_token_ids(qwen)[VIDEO_TOKEN]) == 1


def test_dynamic_mode_expands_one_placeholder_per_tile(qwen):
    proc = NVILAProcessor(TINY_DYNAMIC, qwen)
    out = proc("<image>What is this?", images=[picture(120, 90)])
    n = len(out.media)
    processed = proc.image_processor.process_image(picture(120, 90))
    assert n == processed.num_blocks == processed.pixel_values.shape[0] > 1  # tiles + thumbnail
    assert all(m.kind == "image" and m.pixel_values.shape == (1, 3, S, S) for m in out.media)
    assert torch.equal(torch.cat([m.pixel_values for m in out.media]), processed.pixel_values)
    tiles = "<image>\n" * n
    assert f"<|im_start|>user\n{tiles}What is this?<|im_end|>" in out.prompt_text
    assert out.input_ids.count(media_token_ids(qwen)[IMAGE_TOKEN]) == n


def test_placeholder_media_count_mismatches(proc):
    with pytest.raises(ValueError, match=r"2 <image> and 0 <vila/video> placeholders, but 1 "):
        proc("<image> and <image>", images=[picture()])
    with pytest.raises(ValueError, match=r"1 <image> and 0 <vila/video> placeholders, but 3 "):
        proc("<image>", images=[picture()], frames=[picture(), picture()])
    with pytest.raises(ValueError, match="1 video were given"):
        proc("<image> and", images=[picture()], video=[picture()])
    with pytest.raises(ValueError, match="0 video"):
        proc("<vila/video> and", images=[])
    with pytest.raises(ValueError, match="at most one"):
        proc("<vila/video><vila/video>", video=[picture()])
    with pytest.raises(ValueError, match="2 frame_keys for 1 frames"):
        proc("<image>", frames=[picture()], frame_keys=["a", "b"])
    with pytest.raises(ValueError, match="media positions"):
        proc("<image>", images=[picture()], system="Look at <image>")


def test_chat_false_and_custom_system(proc, qwen):
    raw = proc("<image>\nHi", images=[picture()], chat=False)
    assert raw.prompt_text == "<image>\nHi"
    assert raw.input_ids == qwen("<image>\nHi").input_ids
    bare = proc("Hi", system=None)
    assert bare.prompt_text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert bare.media == []


def test_navigation_nvila(proc, qwen):
    frames = [np.full((48, 64, 3), 40 * v, dtype=np.uint8) for v in range(1, 4)]
    out = proc.navigation("walk to the sofa .", frames, frame_keys=["k1", "k2", "k3"])
    assert out.prompt_text == apply_chat_template("qwen2", navigation_prompt("Walk to the sofa."))
    assert [m.kind for m in out.media] == ["frame"] * 8
    assert [m.keys for m in out.media] == [None] * 5 + [["k1"], ["k2"], ["k3"]]
    black = proc.image_processor.process_frames([np.zeros((48, 64, 3), np.uint8)])
    assert all(torch.equal(m.pixel_values, black) for m in out.media[:5])
    assert torch.equal(out.media[7].pixel_values, proc.image_processor.process_frames(frames[2:]))
    assert out.input_ids.count(media_token_ids(qwen)[IMAGE_TOKEN]) == 8


def test_navigation_long_history_and_num_frames(proc):
    frames = [picture(32, 32, v) for v in range(20)]
    out = proc.navigation("Go.", frames, frame_keys=list(range(20)))
    assert [m.keys for m in out.media] == [[0], [2], [5], [8], [10], [13], [16], [19]]
    short = proc.navigation("Go.", frames, frame_keys=list(range(20)), num_frames=4)
    assert [m.keys for m in short.media] == [[0], [6], [12], [19]]
    assert short.prompt_text.count("<image>") == 4
    unkeyed = proc.navigation("Go.", frames[:2])
    assert all(m.keys is None for m in unkeyed.media)


def test_navigation_vila15_uses_minus_200():
    llama = build_tokenizer(TINY_NAVILA.llm_config["vocab_size"], "llama_3")
    proc = NVILAProcessor(TINY_NAVILA, llama)
    out = proc.navigation("Turn left at the door.", [picture(40, 40, v) for v in range(9)])
    assert out.input_ids.count(IMAGE_TOKEN_INDEX) == 8 and len(out.media) == 8
    assert out.input_ids[:2] == [llama.bos_token_id] * 2  # tokenizer BOS + literal one
    assert out.prompt_text.startswith("<|begin_of_text|><|start_header_id|>system")
    assert out.prompt_text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(ValueError, match="take no video"):
        proc("<vila/video>", video=[picture()])


def test_decode_skips_special_tokens_and_placeholders(proc, qwen):
    ids = qwen("The next action is stop.<|im_end|>").input_ids
    assert proc.decode(ids) == "The next action is stop."
    assert proc.decode(torch.tensor([IMAGE_TOKEN_INDEX, *ids])) == "The next action is stop."


def test_media_item_defaults():
    item = MediaItem("frame", torch.zeros(1, 3, S, S))
    assert item.block_size is None and item.keys is None


def test_answer_ids_are_the_answer_then_its_end_token(tiny_config, tiny_tokenizer):
    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    ids = processor.answer_ids("The next action is stop.")
    assert ids[-1] in stop_token_ids(tiny_tokenizer, tiny_config.chat_template)
    assert processor.decode(ids[:-1]) == "The next action is stop."
