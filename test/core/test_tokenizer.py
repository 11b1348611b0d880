"""The offline BPE mirrors NVILA's vocabulary layout, round-trips through disk and is deterministic."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from nvila_core.model.tokenizer import (
    IMAGE_TOKEN,
    MEDIA_TOKENS,
    SENTINEL_TOKEN,
    VIDEO_TOKEN,
    build_tokenizer,
    load_tokenizer,
    media_token_ids,
)

VOCAB = 512
SAMPLE = "<|im_start|>user\n<image>\nWalk past the red sofa and turn left.<|im_end|>\n"


@pytest.fixture(scope="module")
def qwen():
    return build_tokenizer(VOCAB, "qwen2")


@pytest.fixture(scope="module")
def llama():
    return build_tokenizer(VOCAB, "llama_3")


def test_media_ids_follow_the_embedding_rows(qwen, llama):
    for tok in (qwen, llama):
        ids = media_token_ids(tok)
        assert ids == {SENTINEL_TOKEN: VOCAB, IMAGE_TOKEN: VOCAB + 1, VIDEO_TOKEN: VOCAB + 2}
        assert len(tok) == VOCAB + 3
        regular = [i for t, i in tok.get_vocab().items() if t not in MEDIA_TOKENS]
        assert max(regular) == VOCAB - 1 and len(regular) == VOCAB


def test_qwen2_special_tokens_mirror_nvila(qwen):
    # NVILA-8B: 151643..151647 = <|endoftext|> <|im_start|> <|im_end|> [BOS] [PAD], vocab 151648.
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[BOS]", "[PAD]"]
    assert qwen.convert_tokens_to_ids(names) == list(range(VOCAB - 5, VOCAB))
    assert (qwen.eos_token, qwen.pad_token, qwen.bos_token) == ("<|im_end|>", "[PAD]", "[BOS]")
    assert qwen("hello").input_ids[0] != qwen.bos_token_id  # Qwen never prepends its BOS


def test_llama3_prepends_begin_of_text(llama):
    assert llama.bos_token == "<|begin_of_text|>" and llama.eos_token == "<|end_of_text|>"
    ids = llama("hello").input_ids
    assert ids[0] == llama.bos_token_id and ids.count(llama.bos_token_id) == 1


@pytest.mark.parametrize(
    "token",
    ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "[BOS]", "[PAD]", *MEDIA_TOKENS],
)
def test_special_tokens_are_single_ids(qwen, token):
    ids = qwen(f"a{token}b", add_special_tokens=False).input_ids
    assert qwen.convert_tokens_to_ids(token) in ids
    assert len(qwen(token, add_special_tokens=False).input_ids) == 1


def test_image_then_newline(qwen):
    newline = qwen("\n").input_ids
    assert len(newline) == 1
    assert qwen(f"{IMAGE_TOKEN}\n").input_ids == [media_token_ids(qwen)[IMAGE_TOKEN], newline[0]]


def test_navila_answers_are_compact(qwen):
    text = "The next action is move forward 75 cm."
    ids = qwen(text).input_ids
    words = ["The", "Ġnext", "Ġaction", "Ġis", "Ġmove", "Ġforward"]
    assert qwen.convert_ids_to_tokens(ids)[:6] == words  # one token per word
    assert qwen.decode(ids) == text


def test_decode_skips_special_tokens(qwen):
    ids = qwen(SAMPLE).input_ids
    assert qwen.decode(ids) == SAMPLE
    assert (
        qwen.decode(ids, skip_special_tokens=True)
        == "user\n\nWalk past the red sofa and turn left.\n"
    )


def test_deterministic_in_process_and_across_processes(qwen, tmp_path):
    again = build_tokenizer(VOCAB, "qwen2")
    assert again.get_vocab() == qwen.get_vocab()
    assert again(SAMPLE).input_ids == qwen(SAMPLE).input_ids
    code = (
        "import json, sys\n"
        "from nvila_core.model.tokenizer import build_tokenizer\n"
        f"json.dump(build_tokenizer({VOCAB}).get_vocab(), sys.stdout)\n"
    )
    root = Path(__file__).resolve().parents[2]
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(other.stdout) == qwen.get_vocab()


def test_extra_corpus_changes_merges_not_layout():
    tok = build_tokenizer(VOCAB, corpus=["zzyzx quux zzyzx quux"] * 500)
    assert "zzyzx" in tok.convert_ids_to_tokens(tok("zzyzx").input_ids)
    assert media_token_ids(tok)[IMAGE_TOKEN] == VOCAB + 1


def test_large_vocab_is_padded_with_reserved_tokens():
    tok = build_tokenizer(4096)
    assert media_token_ids(tok)[SENTINEL_TOKEN] == 4096
    assert tok.convert_tokens_to_ids("[PAD]") == 4095
    reserved = [t for t in tok.get_vocab() if t.startswith("<|reserved_")]
    assert reserved  # the built-in corpus has far fewer than 4091 merges
    assert tok.decode(tok.convert_tokens_to_ids(reserved[:3]), skip_special_tokens=True) == ""


def test_too_small_vocab_and_unknown_template():
    with pytest.raises(ValueError, match="too small"):
        build_tokenizer(200)
    with pytest.raises(ValueError, match="unknown chat template"):
        build_tokenizer(VOCAB, "vicuna")


def test_save_load_round_trip(qwen, llama, tmp_path):
    for name, tok in (("qwen", qwen), ("llama", llama)):
        tok.save_pretrained(tmp_path / name)
        loaded = load_tokenizer(tmp_path / name)
        assert len(loaded) == len(tok)
        assert loaded(SAMPLE).input_ids == tok(SAMPLE).input_ids
        assert media_token_ids(loaded) == media_token_ids(tok)
        assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
            tok.bos_token_id,
            tok.eos_token_id,
            tok.pad_token_id,
        )


def test_load_adds_missing_media_tokens_to_a_qwen2_checkpoint(qwen, tmp_path):
    """A Qwen2 `llm/` folder ships vocab.json + merges.txt without VILA's media tokens."""
    llm = tmp_path / "llm"
    llm.mkdir()
    qwen.backend_tokenizer.model.save(str(llm))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[BOS]", "[PAD]"]
    added = {
        str(qwen.convert_tokens_to_ids(t)): {
            "content": t,
            "special": True,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
        }
        for t in specials
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "bos_token": "[BOS]",
        "eos_token": "<|im_end|>",
        "pad_token": "[PAD]",
    }
    (llm / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = load_tokenizer(llm)
    assert media_token_ids(loaded) == media_token_ids(qwen)
    assert loaded(SAMPLE).input_ids == qwen(SAMPLE).input_ids


def test_load_names_the_directory_when_files_are_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")


def test_media_token_ids_requires_registered_tokens():
    plain = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a"))
    )
    with pytest.raises(ValueError, match="load_tokenizer"):
        media_token_ids(plain)
