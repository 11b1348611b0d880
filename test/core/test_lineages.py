"""nvila_core against each lineage's own algorithm (test/helpers/lineage_reference.py) on tiny
random checkpoints in the VILA split layout, configured like the released ones (no nvila_core
section: the lineage is read from the checkpoint's config alone).

- NVILA (Qwen2): the prompt comes from the checkpoint's own chat template, here VILA's
  qwen2.jinja as a checkpoint may carry it (with and without a final period on its system
  prompt), the projector's merged tokens come row-major, each image ends with "\\n".
- NaVILA (Llama-3): the prompt is VILA-1.5's llama_3 conversation (two BOS, -200 per frame)
  even though the tokenizer carries Meta's Llama-3 chat template, the merged tokens come
  column-major, no "\\n".

Prompt ids must be equal, visual tokens and logits within 1e-4.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lineage_reference import (
    NAVILA_IMAGE_ID,
    ReferenceModel,
    navila_ids,
    navila_prompt,
    navila_question,
    navila_stop_ids,
    nvila_ids,
    nvila_prompt,
)

from nvila_core.model.checkpoint import read_config, save_checkpoint
from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.prompting import LLAMA3_SYSTEM
from nvila_core.model.tokenizer import IMAGE_TOKEN, build_tokenizer
from nvila_core.runtime import Engine

VOCAB = 512
SIDE = 70  # 5 x 5 patches of 14 pixels: an odd grid, padded to 6 x 6, merged to 3 x 3 tokens
INSTRUCTION = "Walk past the sofa and stop at the door."  # already in NaVILA's normalized form
TOLERANCE = 1e-4

# Meta's Llama-3-Instruct chat template, as Llama-3 tokenizers (NaVILA's included) carry it.
META_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def vila_qwen2_template(system: str) -> str:
    """VILA's qwen2.jinja as VILA installs it (indentation and newlines removed)."""
    return (
        "{% if messages[0]['role'] != 'system' %}"
        f"{{{{ '<|im_start|>system\\n{system}<|im_end|>\\n' }}}}"
        "{% endif %}"
        "{% for message in messages if message['content'] is not none %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
        "'\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


def tiny_lineage_config(lineage: str) -> NVILAConfig:
    tiny = NVILAConfig.preset("tiny")
    vision = {**tiny.vision_config, "image_size": SIDE}
    common = dict(vision_config=vision, image_aspect_ratio="resize", s2_scales=[SIDE])
    if lineage == "nvila":
        return dataclasses.replace(tiny, name="tiny-nvila", **common)
    llama = {**tiny.llm_config, "model_type": "llama", "rope_theta": 500000.0}
    llama.update(rms_norm_eps=1e-5, bos_token_id=VOCAB - 5, eos_token_id=VOCAB - 4)
    return dataclasses.replace(
        tiny,
        name="tiny-navila",
        architecture="vila1.5",
        chat_template="llama_3",
        llm_config=llama,
        **common,
    )


def released_like_checkpoint(root, lineage: str, chat_template: str):
    """A tiny random checkpoint whose config.json has only VILA's keys and whose tokenizer
    carries `chat_template`."""
    config = tiny_lineage_config(lineage)
    tokenizer = build_tokenizer(VOCAB, config.chat_template)
    model = NVILAModel.from_config(config, seed=0, tokenizer=tokenizer)
    with torch.no_grad():  # non-trivial LayerNorm parameters in the projector
        generator = torch.Generator().manual_seed(1)
        norm = model.mm_projector.layers[1]
        norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
        norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator))
    save_checkpoint(model, tokenizer, root)
    top = json.loads((root / "config.json").read_text())
    del top["nvila_core"]
    (root / "config.json").write_text(json.dumps(top))
    tokenizer_config = root / "llm" / "tokenizer_config.json"
    data = json.loads(tokenizer_config.read_text())
    data["chat_template"] = chat_template
    tokenizer_config.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(5)]


def compare(engine: Engine, reference: ReferenceModel, inputs, image_id, newline_id):
    """Max |difference| of the visual tokens and of the logits, ours against the reference."""
    model = engine.backend.model
    pixels = _pixels(inputs)
    with torch.no_grad():
        ours_tokens = [block for item in inputs.media for block in model.media_blocks(item)]
    ref_tokens = reference.visual_tokens(pixels)
    token_diff = max(
        float((a.double() - torch.from_numpy(b)).abs().max())
        for a, b in zip(ours_tokens, ref_tokens, strict=True)
    )
    with torch.no_grad():
        ours = model(model.embed_inputs(inputs.input_ids, inputs.media)).logits[0]
    ref_embeds = reference.embeds(inputs.input_ids, pixels, image_id, newline_id)
    theirs = reference.logits(ref_embeds)
    assert ours.shape == theirs.shape
    return token_diff, float((ours - theirs).abs().max()), ref_embeds


# ---------------------------------------------------------------- NaVILA
@pytest.fixture(scope="module")
def navila(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage") / "navila-tiny-8f"
    return released_like_checkpoint(root, "navila", META_LLAMA3_TEMPLATE)


def test_navila_checkpoint_reads_as_its_lineage(navila):
    config = read_config(navila)
    assert (config.architecture, config.chat_template) == ("vila1.5", "llama_3")
    assert (config.projector_token_order, config.token_order) == ("auto", "column_major")


def test_navila_prompt_tokens_logits_and_greedy_match_navila(navila, frames):
    engine = Engine.from_pretrained(navila)
    tokenizer = engine.tokenizer
    assert tokenizer.chat_template == META_LLAMA3_TEMPLATE  # carried, but not NaVILA's prompt
    assert engine.processor.chat.source == "built-in"
    inputs = engine.processor.navigation(INSTRUCTION, frames)

    prompt = navila_prompt(navila_question(INSTRUCTION, 8))
    assert inputs.prompt_text == prompt
    assert inputs.input_ids == navila_ids(tokenizer, prompt)
    bos = tokenizer.bos_token_id
    assert inputs.input_ids[:2] == [bos, bos] and inputs.input_ids.count(NAVILA_IMAGE_ID) == 8
    # Meta's template with NaVILA's system prompt renders the same text
    meta = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": LLAMA3_SYSTEM},
            {"role": "user", "content": navila_question(INSTRUCTION, 8)},
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert meta == prompt

    reference = ReferenceModel(navila, "navila")
    token_diff, logit_diff, embeds = compare(engine, reference, inputs, NAVILA_IMAGE_ID, None)
    assert token_diff < TOLERANCE and logit_diff < TOLERANCE, (token_diff, logit_diff)

    stops = navila_stop_ids(tokenizer, reference.llm.config.eos_token_id)
    assert set(engine.stop_token_ids) == stops
    assert engine.stop_token_ids == tokenizer.convert_tokens_to_ids(
        ["<|eot_id|>", "<|end_of_text|>"]
    )
    ours = engine.run(inputs, max_new_tokens=6)
    assert ours.token_ids == reference.greedy(embeds, stops, 6)[: len(ours.token_ids)]


def test_navila_row_major_tokens_would_scramble_the_frames(navila, frames):
    """The same checkpoint forced to NVILA's row-major order drifts far from NaVILA's logits."""
    engine = Engine.from_pretrained(navila)
    model = engine.backend.model
    inputs = engine.processor.navigation(INSTRUCTION, frames)
    reference = ReferenceModel(navila, "navila")
    row_major = NVILAModel.from_config(
        dataclasses.replace(model.config, projector_token_order="row_major"),
        tokenizer=engine.tokenizer,
    )
    row_major.load_state_dict(model.state_dict())
    with torch.no_grad():
        wrong = row_major(row_major.embed_inputs(inputs.input_ids, inputs.media)).logits[0]
    right = reference.logits(reference.embeds(inputs.input_ids, _pixels(inputs), -200, None))
    assert float((wrong - right).abs().max()) > 100 * TOLERANCE


def _pixels(inputs) -> torch.Tensor:
    return torch.cat([item.pixel_values for item in inputs.media])


# ---------------------------------------------------------------- NVILA
@pytest.fixture(
    scope="module", params=["You are a helpful assistant", "You are a helpful assistant."]
)
def nvila(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage") / "nvila-tiny"
    return released_like_checkpoint(root, "nvila", vila_qwen2_template(request.param))


def test_nvila_checkpoint_reads_as_its_lineage(nvila):
    config = read_config(nvila)
    assert (config.architecture, config.chat_template) == ("nvila", "qwen2")
    assert (config.projector_token_order, config.token_order) == ("auto", "row_major")


@pytest.mark.parametrize("query", ["navigation", "image"])
def test_nvila_prompt_tokens_logits_and_greedy_match_vila(nvila, frames, query):
    engine = Engine.from_pretrained(nvila)
    tokenizer = engine.tokenizer
    assert engine.processor.chat.source == "checkpoint"
    if query == "navigation":
        inputs = engine.processor.navigation(INSTRUCTION, frames)
        question = navila_question(INSTRUCTION, 8)
    else:
        question = f"{IMAGE_TOKEN}\nDescribe the scene."
        inputs = engine.processor(question, images=[frames[0]])
    prompt = nvila_prompt(tokenizer, question)
    assert inputs.prompt_text == prompt
    assert inputs.input_ids == nvila_ids(tokenizer, prompt)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert inputs.input_ids.count(image_id) == len(inputs.media)

    (newline_id,) = tokenizer("\n").input_ids
    reference = ReferenceModel(nvila, "nvila")
    token_diff, logit_diff, embeds = compare(engine, reference, inputs, image_id, newline_id)
    assert token_diff < TOLERANCE and logit_diff < TOLERANCE, (token_diff, logit_diff)

    # VILA's stop tokens: what follows an answer in the template (<|im_end|>), and the eos
    assert engine.stop_token_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    ours = engine.run(inputs, max_new_tokens=6)
    stops = set(engine.stop_token_ids)
    assert ours.token_ids == reference.greedy(embeds, stops, 6)[: len(ours.token_ids)]


# ---------------------------------------------------------------- explicit settings
def test_an_explicit_token_order_in_the_checkpoint_wins(tmp_path):
    config = dataclasses.replace(tiny_lineage_config("navila"), projector_token_order="row_major")
    tokenizer = build_tokenizer(VOCAB, "llama_3")
    root = save_checkpoint(NVILAModel.from_config(config, seed=0), tokenizer, tmp_path / "c")
    assert json.loads((root / "config.json").read_text())["nvila_core"][
        "projector_token_order"
    ] == ("row_major")
    assert read_config(root).token_order == "row_major"
    engine = Engine.from_pretrained(root)
    assert engine.backend.model.mm_projector.layers[0].order == "row_major"


NANO = Path(__file__).resolve().parents[2] / "models" / "navila-nano"


@pytest.mark.skipif(not NANO.is_dir(), reason="models/navila-nano is not in this checkout")
def test_navila_nano_keeps_its_built_in_prompt(frames):
    """The shipped model's tokenizer carries no chat template: its compact prompt stays inside
    the built-in qwen2 template it was trained with, and its answers end at <|im_end|>."""
    engine = Engine.from_pretrained(NANO)
    assert engine.processor.chat.source == "built-in"
    assert engine.config.token_order == "row_major"
    inputs = engine.processor.navigation(INSTRUCTION, frames[:3], previous_actions=["stop"])
    assert inputs.prompt_text.startswith(
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\n<image>\n"
    )
    assert inputs.prompt_text.endswith("\nNext?<|im_end|>\n<|im_start|>assistant\n")
    assert engine.stop_token_ids == [engine.tokenizer.convert_tokens_to_ids("<|im_end|>")]
