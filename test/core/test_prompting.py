"""Chat templates, the NaVILA prompt and history sampler, and media-token tokenization."""

import numpy as np
import pytest
import torch
from PIL import Image

from nvila_core.model.prompting import (
    DEFAULT_SYSTEM,
    IMAGE_TOKEN_INDEX,
    LLAMA3_SYSTEM,
    QWEN2_SYSTEM,
    ChatFormat,
    apply_chat_template,
    checkpoint_chat_template,
    navigation_prompt,
    normalize_instruction,
    render_builtin,
    sample_history,
    sample_history_indices,
    stop_token_ids,
    tokenize_prompt,
)
from nvila_core.model.tokenizer import IMAGE_TOKEN, build_tokenizer, media_token_ids

VOCAB = 512


@pytest.fixture(scope="module")
def qwen():
    return build_tokenizer(VOCAB, "qwen2")


@pytest.fixture(scope="module")
def llama():
    return build_tokenizer(VOCAB, "llama_3")


# ---------------------------------------------------------------- chat templates
def test_qwen2_chatml_literal():
    expected = (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\n<image>Describe the scene.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert apply_chat_template("qwen2", "  <image>Describe the scene.\n") == expected
    assert QWEN2_SYSTEM == "You are a helpful assistant"


def test_qwen2_without_system_and_with_answer():
    assert (
        apply_chat_template("qwen2", "Hi", system=None)
        == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        apply_chat_template("qwen2", "Hi", system=" Be brief. ", add_generation_prompt=False)
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    assert apply_chat_template("qwen2", "Hi", assistant=" The next action is stop. ") == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nThe next action is stop.<|im_end|>\n"
    )


def test_llama3_literal():
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful language and vision assistant. You are able to understand the visual "
        "content that the user provides, and assist the user with a variety of tasks using "
        "natural language.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nGo.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert apply_chat_template("llama_3", "<image>\nGo.") == expected
    assert expected.count(LLAMA3_SYSTEM) == 1


def test_llama3_without_system_and_with_answer():
    assert apply_chat_template("llama_3", "Go.", system=None) == (
        "<|start_header_id|>user<|end_header_id|>\n\nGo.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert apply_chat_template("llama_3", "Go.", system=None, assistant="Stop.") == (
        "<|start_header_id|>user<|end_header_id|>\n\nGo.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nStop.<|end_of_text|>"
    )


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown chat template"):
        apply_chat_template("vicuna_v1", "hi")


def test_llama3_renders_turns_as_the_conversation_template():
    """VILA-1.5's get_prompt: every turn but the last ends with <|eot_id|>, the last with
    <|end_of_text|>, a turn without content is its header alone."""
    messages = [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": "C"},
    ]
    header = "<|start_header_id|>{}<|end_header_id|>\n\n".format
    system = f"<|begin_of_text|>{header('system')}{LLAMA3_SYSTEM}<|eot_id|>"
    assert render_builtin("llama_3", messages, add_generation_prompt=False) == (
        f"{system}{header('user')}A<|eot_id|>{header('assistant')}B<|eot_id|>"
        f"{header('user')}C<|end_of_text|>"
    )
    assert render_builtin("llama_3", messages).endswith(
        f"{header('user')}C<|eot_id|>{header('assistant')}"
    )


def test_stop_tokens_are_what_ends_an_answer_in_the_template(qwen, llama):
    # VILA's qwen2.jinja ends every answer with <|im_end|> (also the eos); <|endoftext|> is not
    # an end of turn.
    assert stop_token_ids(qwen, "qwen2") == [VOCAB - 3]
    assert qwen.convert_ids_to_tokens(VOCAB - 3) == "<|im_end|>" == qwen.eos_token
    # llama_3: a turn before another ends with <|eot_id|>, the last answer with <|end_of_text|>.
    eot, end = llama.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert stop_token_ids(llama, "llama_3") == [eot, end]
    assert end == llama.eos_token_id


# ---------------------------------------------------------------- the checkpoint's own template
# VILA's qwen2.jinja as VILA's builder installs it (indentation and newlines removed), with the
# system prompt as the checkpoint may carry it.
def vila_qwen2_jinja(system: str = "You are a helpful assistant") -> str:
    return (
        "{% if messages[0]['role'] != 'system' %}"
        f"{{{{ '<|im_start|>system\\n{system}<|im_end|>\\n' }}}}"
        "{% endif %}"
        "{% for message in messages if message['content'] is not none %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


@pytest.fixture
def qwen_with_template():
    tokenizer = build_tokenizer(VOCAB, "qwen2")
    tokenizer.chat_template = vila_qwen2_jinja("You are a helpful assistant.")
    return tokenizer


def test_vila_qwen2_jinja_renders_like_the_built_in_template(qwen):
    """The built-in qwen2 template is VILA's qwen2.jinja: same text for every system choice."""
    tokenizer = build_tokenizer(VOCAB, "qwen2")
    tokenizer.chat_template = vila_qwen2_jinja()
    own = ChatFormat(tokenizer, "qwen2")
    assert own.source == "checkpoint" and ChatFormat(qwen, "qwen2").source == "built-in"
    for system in (DEFAULT_SYSTEM, " Be brief. "):
        for answer in (None, " The next action is stop. "):
            assert own.apply(" <image>Hi\n", system, assistant=answer) == apply_chat_template(
                "qwen2", " <image>Hi\n", system, assistant=answer
            )
    assert own.stop_token_ids() == stop_token_ids(qwen, "qwen2")


def test_the_checkpoint_template_is_used_when_the_tokenizer_has_one(qwen_with_template):
    chat = ChatFormat(qwen_with_template, "qwen2")
    assert chat.apply("Hi") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # VILA's "no system prompt": an empty system message, which this template renders
    assert chat.apply("Hi", system=None).startswith("<|im_start|>system\n<|im_end|>\n")
    assert stop_token_ids(qwen_with_template, "qwen2") == [VOCAB - 3]


def test_llama3_lineage_never_reads_the_tokenizer_template(llama):
    """NaVILA's code renders VILA-1.5's llama_3 conversation whatever the tokenizer carries."""
    tokenizer = build_tokenizer(VOCAB, "llama_3")
    tokenizer.chat_template = vila_qwen2_jinja()
    assert checkpoint_chat_template(tokenizer, "llama_3") is None
    assert checkpoint_chat_template(tokenizer, "qwen2") == vila_qwen2_jinja()
    chat = ChatFormat(tokenizer, "llama_3")
    assert chat.source == "built-in"
    assert chat.apply("<image>\nGo.") == apply_chat_template("llama_3", "<image>\nGo.")
    assert chat.stop_token_ids() == stop_token_ids(llama, "llama_3")


def test_named_templates_use_the_default_one():
    tokenizer = build_tokenizer(VOCAB, "qwen2")
    tokenizer.chat_template = {"default": vila_qwen2_jinja("Hello."), "tool_use": "{{ 1 }}"}
    assert ChatFormat(tokenizer, "qwen2").apply("Hi").startswith("<|im_start|>system\nHello.")


def test_stop_tokens_need_the_sentinel_token():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "<|im_end|>": 1}, unk_token="[UNK]"))
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>")
    with pytest.raises(ValueError, match="sentinel"):
        stop_token_ids(plain, "qwen2")


# ---------------------------------------------------------------- NaVILA prompt
def test_navigation_prompt_literal():
    expected = (
        "Imagine you are a robot programmed for navigation tasks. You have been given a video of "
        "historical observations <image>\n<image>\n<image>\n<image>\n<image>\n<image>\n<image>\n"
        ", and current observation <image>\n. Your assigned task is: "
        '"Walk past the sofa and stop at the door." Analyze this series of images to decide '
        "your next action, which could be turning left or right by a specific degree, moving "
        "forward a certain distance, or stop if the task is completed."
    )
    assert navigation_prompt("Walk past the sofa and stop at the door.") == expected
    assert navigation_prompt("x", num_frames=3).count("<image>\n") == 3
    assert "observations , and current observation <image>\n." in navigation_prompt("x", 1)


def test_normalize_instruction():
    assert normalize_instruction("walk past the SOFA .\r\nthen turn left .") == (
        "Walk past the sofa. Then turn left."
    )
    assert normalize_instruction("  go to the door!  stop there") == "Go to the door!  Stop there"
    assert normalize_instruction("Exit the room.") == "Exit the room."


# ---------------------------------------------------------------- history sampler
@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [None] * 7 + [0]),
        (3, [None] * 5 + [0, 1, 2]),
        (7, [None, 0, 1, 2, 3, 4, 5, 6]),
        (8, [0, 1, 2, 3, 4, 5, 6, 7]),
        # 8/7 = 1.14 steps: 0, 1.14, 2.29, 3.43, 4.57, 5.71, 6.86 -> truncated; frame 7 skipped.
        (9, [0, 1, 2, 3, 4, 5, 6, 8]),
        # 19/7 = 2.714: 0, 2.71, 5.43, 8.14, 10.86, 13.57, 16.29.
        (20, [0, 2, 5, 8, 10, 13, 16, 19]),
        # 99/7 = 14.14: 0, 14.14, 28.29, 42.43, 56.57, 70.71, 84.86.
        (100, [0, 14, 28, 42, 56, 70, 84, 99]),
    ],
)
def test_history_indices(n, expected):
    indices = sample_history_indices(n)
    assert indices == expected
    assert len(indices) == 8
    assert indices.count(None) == max(0, 8 - n)
    assert 0 in indices and indices[-1] == n - 1


def test_history_indices_other_lengths_and_errors():
    assert sample_history_indices(5, num_frames=1) == [4]
    assert sample_history_indices(10, num_frames=4) == [0, 3, 6, 9]
    assert sample_history_indices(2, num_frames=4) == [None, None, 0, 1]
    with pytest.raises(ValueError, match="empty"):
        sample_history_indices(0)
    with pytest.raises(ValueError, match="num_frames"):
        sample_history_indices(3, num_frames=0)


def test_sample_history_pads_with_black_frames_of_the_last_frame():
    frames = [np.full((4, 6, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
    out = sample_history(frames)
    assert len(out) == 8
    assert all(f.shape == (4, 6, 3) and f.dtype == np.uint8 and not f.any() for f in out[:5])
    assert out[5:] == frames

    pil = [Image.new("RGB", (5, 3), (9, 9, 9)), Image.new("RGB", (7, 2), (200, 0, 0))]
    padded = sample_history(pil, num_frames=4)
    assert padded[2:] == pil
    assert padded[0].size == (7, 2) and padded[0].getextrema() == ((0, 0), (0, 0), (0, 0))

    tensors = [torch.ones(3, 2, 2)]
    assert torch.equal(sample_history(tensors, num_frames=2)[0], torch.zeros(3, 2, 2))
    assert sample_history(["a", "b"], num_frames=3, pad="black") == ["black", "a", "b"]
    assert sample_history(list("abcdefghij"), num_frames=4) == ["a", "d", "g", "j"]


# ---------------------------------------------------------------- tokenization
def test_nvila_tokenization_uses_media_token_ids(qwen):
    ids = tokenize_prompt(qwen, "<image>\nWhat is this?<vila/video>", "nvila")
    media = media_token_ids(qwen)
    newline = qwen("\n").input_ids[0]
    assert ids[:2] == [media["<image>"], newline]
    assert ids[-1] == media["<vila/video>"]
    assert ids == qwen("<image>\nWhat is this?<vila/video>").input_ids


def test_vila15_splices_minus_200_and_keeps_one_bos(llama):
    prompt = "Look <image>\nand <image>\n<image>\n. Go"
    ids = tokenize_prompt(llama, prompt, "vila1.5")
    bos = llama.bos_token_id
    look, and_, go = (
        llama(t, add_special_tokens=False).input_ids for t in ("Look ", "\nand ", "\n. Go")
    )
    newline = llama("\n", add_special_tokens=False).input_ids
    expected = [bos, *look, -200, *and_, -200, *newline, -200, *go]
    assert ids == expected
    assert ids.count(bos) == 1 and ids.count(IMAGE_TOKEN_INDEX) == 3
    assert media_token_ids(llama)[IMAGE_TOKEN] not in ids


def test_vila15_templated_prompt_starts_with_two_bos(llama):
    # NaVILA's llama_3 system text holds a literal <|begin_of_text|> and the tokenizer prepends
    # one more; the model was trained on exactly that (navila.md §1.2 / nvila.md §4.5).
    prompt = apply_chat_template("llama_3", navigation_prompt("Go."))
    ids = tokenize_prompt(llama, prompt, "vila1.5")
    assert ids[:2] == [llama.bos_token_id] * 2
    assert ids.count(IMAGE_TOKEN_INDEX) == 8
    assert ids.count(llama.bos_token_id) == 2


def test_tokenize_errors(qwen, llama):
    with pytest.raises(ValueError, match="no <vila/video>"):
        tokenize_prompt(llama, "<vila/video> hi", "vila1.5")
    with pytest.raises(ValueError, match="unknown architecture"):
        tokenize_prompt(qwen, "hi", "llava")
