"""Tokenizers: a small offline byte-level BPE for tests, and loading a checkpoint's own tokenizer.

Vocabulary layout mirrors the real NVILA checkpoints (nvila.md §1.4): ids 0..vocab_size-1 are
the regular vocabulary followed by the chat special tokens (Qwen2: `<|endoftext|>`,
`<|im_start|>`, `<|im_end|>`, `[BOS]`, `[PAD]` = 151643..151647), and the media tokens
`<vila/sentinel>`, `<image>`, `<vila/video>` come right after (151648..151650). The LLM embedding
has `vocab_size` rows, so media ids are never looked up and never generated.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<vila/video>"
SENTINEL_TOKEN = "<vila/sentinel>"
# Order matters: VILA adds them in this order, so <image> sits at vocab_size + 1.
MEDIA_TOKENS = (SENTINEL_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN)

# Chat special tokens in checkpoint order (they take the last five ids below vocab_size).
_CHAT_SPECIALS = {
    "qwen2": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "[BOS]", "[PAD]"),
    "llama_3": (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ),
}
# Qwen2 NVILA: bos [BOS] (never prepended), eos <|im_end|>, pad [PAD] (special_tokens_map.json).
# Llama-3 NaVILA: <|begin_of_text|> is prepended to every encoding; eos <|end_of_text|> (config
# eos_token_id 128001), pad = eos as in NaVILA's generation call.
_ROLES = {
    "qwen2": {"bos_token": "[BOS]", "eos_token": "<|im_end|>", "pad_token": "[PAD]"},
    "llama_3": {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "pad_token": "<|end_of_text|>",
    },
}
_BYTE_ALPHABET = 256
_REPEAT = 300  # weight of the prompt/answer lines in the BPE corpus


# ---------------------------------------------------------------- built-in corpus
def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(","))


_LANDMARKS = _words(
    "chair, table, sofa, couch, bed, plant, shelf, box, door, window, stairs, staircase, "
    "kitchen, counter, sink, fridge, refrigerator, oven, stove, toilet, bathroom, bedroom, "
    "hallway, corridor, living room, dining room, office, desk, lamp, painting, picture, "
    "mirror, rug, carpet, cabinet, closet, dresser, television, tv, fireplace, bookcase, "
    "bench, wall, corner, doorway, entrance, exit, hall, room, floor, ceiling, pillar, "
    "column, railing, island, stool, bathtub, shower, towel, vase, clock, curtain, piano, "
    "washing machine, laundry, garage, balcony, patio, garden, tree, car, bin, trash can, "
    "sign, arch"
)
_COLOURS = _words(
    "red, green, blue, yellow, white, black, brown, gray, grey, orange, purple, pink, "
    "wooden, glass, metal, dark, light, large, small, round"
)
_DIRECTIONS = _words(
    "left, right, straight, forward, ahead, back, backward, around, up, down, north, south, "
    "east, west, slightly left, slightly right, sharp left, sharp right"
)
_RELATIONS = _words(
    "next to, in front of, behind, past, towards, toward, into, out of, through, near, "
    "beside, between, across, along, around, under, over, inside, outside, at, by, to, on, "
    "until you reach, until you see, and stop at, and wait at"
)
_VERBS = _words(
    "Walk, Go, Turn, Head, Move, Continue, Proceed, Exit, Enter, Stop, Wait, Climb, Take, "
    "Pass, Follow, Cross, Face, Leave, Approach, Step"
)
_NUMBER_WORDS = _words(
    "zero, one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, "
    "twenty, thirty, forty, fifty, hundred, first, second, third, fourth, fifth, last, next, "
    "half, once, twice, few, several"
)
_GENERAL = _words(
    "the, a, an, and, or, but, of, in, is, are, was, were, be, it, this, that, there, here, "
    "you, your, we, they, he, she, what, where, which, who, how, why, when, image, images, "
    "video, frame, frames, scene, describe, show, see, look, find, answer, question, please, "
    "can, could, would, should, will, do, does, have, has, with, from, for, about, as, "
    "robot, person, people, man, woman, dog, cat, object, objects, color, colour, many, "
    "much, some, all, any, no, not, yes, very, more, most, other, same, new, old, good, top, "
    "bottom, middle, side, end, way, path, step, steps, distance, degree, degrees, meter, "
    "meters, cm, action"
)

_NAVILA_PROMPT = (
    "Imagine you are a robot programmed for navigation tasks. You have been given a video of "
    "historical observations, and current observation. Your assigned task is: Analyze this "
    "series of images to decide your next action, which could be turning left or right by a "
    "specific degree, moving forward a certain distance, or stop if the task is completed."
)
_SYSTEM_PROMPTS = (
    "You are a helpful assistant",
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language.",
    "system user assistant",
)


def _builtin_corpus() -> Iterator[str]:
    """English the tiny models will see: NaVILA prompts and answers, instructions, captions.

    The prompt and answer lines are repeated so that BPE spends its first merges on them: a tiny
    model then reads and writes "The next action is move forward 75 cm." in few tokens.
    """
    answers = [f"The next action is move forward {cm} cm." for cm in (25, 50, 75)]
    answers += [
        f"The next action is turn {side} {deg} degrees."
        for side, deg in itertools.product(("left", "right"), (15, 30, 45))
    ]
    answers.append("The next action is stop.")
    yield from [_NAVILA_PROMPT, *_SYSTEM_PROMPTS, *answers] * _REPEAT
    objects = itertools.cycle(_LANDMARKS)
    colours = itertools.cycle(_COLOURS)
    for verb, direction, relation in itertools.product(_VERBS, _DIRECTIONS, _RELATIONS):
        yield f"{verb} {direction} {relation} the {next(colours)} {next(objects)}."
    for colour, landmark in itertools.product(_COLOURS, _LANDMARKS):
        yield f"There is a {colour} {landmark} in the room. The {landmark} is {colour}."
    for number, word in enumerate(_NUMBER_WORDS):
        yield f"{word} {number} {number * 7} {number * 25} {number * 15} {word.capitalize()}"
    for i in range(0, len(_GENERAL), 8):
        yield " ".join(_GENERAL[i : i + 8]).capitalize() + "?"
    yield ", ".join(_LANDMARKS + _COLOURS + _DIRECTIONS)
    yield "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 30 45 60 75 90 100 180 360"


def build_tokenizer(
    vocab_size: int, template: str = "qwen2", corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE with the real checkpoints' special-token layout.

    Regular tokens fill ids 0..vocab_size-6 (reserved `<|reserved_N|>` tokens pad the range when
    the corpus runs out of merges), the five chat specials of `template` take the last five ids
    below vocab_size, and the media tokens take vocab_size, vocab_size+1, vocab_size+2.
    """
    if template not in _CHAT_SPECIALS:
        raise ValueError(f"unknown chat template {template!r} (known: {', '.join(_CHAT_SPECIALS)})")
    specials = _CHAT_SPECIALS[template]
    regular = vocab_size - len(specials)
    if regular < _BYTE_ALPHABET:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: a byte-level BPE needs {_BYTE_ALPHABET} byte "
            f"tokens plus {len(specials)} chat special tokens"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=regular,
        min_frequency=2,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = list(_builtin_corpus()) + list(corpus or ())
    backend.train_from_iterator(lines, trainer=trainer)
    reserved = [f"<|reserved_{i}|>" for i in range(regular - backend.get_vocab_size())]
    for group in (reserved, specials, MEDIA_TOKENS):
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in group])
    if template == "llama_3":
        # Llama-3 prepends <|begin_of_text|> to every encoding.
        bos = specials[0]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, backend.token_to_id(bos))],
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **_ROLES[template]
    )
    ids = media_token_ids(tokenizer)
    if [ids[t] for t in MEDIA_TOKENS] != [vocab_size, vocab_size + 1, vocab_size + 2]:
        raise RuntimeError(f"media token ids {ids} do not follow vocab_size {vocab_size}")
    return tokenizer


def load_tokenizer(llm_dir: str | Path) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer from local files, with the media tokens added as VILA does."""
    llm_dir = Path(llm_dir)
    has_files = (llm_dir / "tokenizer.json").is_file() or (
        (llm_dir / "vocab.json").is_file() and (llm_dir / "merges.txt").is_file()
    )
    if not has_files:
        raise FileNotFoundError(
            f"no tokenizer in {llm_dir}: expected tokenizer.json (Llama-3) or vocab.json + "
            "merges.txt (Qwen2)"
        )
    try:
        if _saved_as_is(llm_dir):
            # Our own tokenizers: AutoTokenizer would follow config.json's model_type and rebuild
            # a Qwen2 pre-tokenizer around the vocabulary, splitting "45" into "4", "5".
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(llm_dir), local_files_only=True)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot load the tokenizer in {llm_dir}: {err}") from err
    missing = [t for t in MEDIA_TOKENS if token_id(tokenizer, t) is None]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return tokenizer


def _saved_as_is(llm_dir: Path) -> bool:
    """True for a tokenizer.json whose config names the generic fast class (ours), which must be
    loaded exactly as stored."""
    config_path = llm_dir / "tokenizer_config.json"
    if not (llm_dir / "tokenizer.json").is_file() or not config_path.is_file():
        return False
    tokenizer_class = json.loads(config_path.read_text()).get("tokenizer_class")
    return tokenizer_class in ("TokenizersBackend", "PreTrainedTokenizerFast")


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of one whole token, or None when the tokenizer does not have it.

    A lookup, not `get_vocab()`: building the vocabulary dict of a 150k-token tokenizer costs
    about 0.1 s, too much per robot query.
    """
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or tokenizer.convert_ids_to_tokens(found) != token:
        return None
    return found


def media_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """{"<image>": id, "<vila/video>": id, "<vila/sentinel>": id}; raises if one is missing."""
    ids = {
        token: token_id(tokenizer, token) for token in (IMAGE_TOKEN, VIDEO_TOKEN, SENTINEL_TOKEN)
    }
    missing = [token for token, found in ids.items() if found is None]
    if missing:
        raise ValueError(
            f"tokenizer lacks the media tokens {missing}; load it with load_tokenizer()"
        )
    return ids
