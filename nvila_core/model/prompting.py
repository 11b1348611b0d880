"""Prompt text and prompt tokens: chat templates, the NaVILA navigation prompt and frame history.

Two conventions live side by side, one per lineage:
- NVILA ("nvila"): the checkpoint's own chat template (Qwen2 ChatML; VILA's qwen2.jinja when the
  tokenizer carries none), `<image>` / `<vila/video>` are single special tokens;
- NaVILA ("vila1.5"): VILA-1.5's `llama_3` conversation template, every `<image>` becomes the
  id -200.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from nvila_core.model.tokenizer import (
    IMAGE_TOKEN,
    SENTINEL_TOKEN,
    VIDEO_TOKEN,
    media_token_ids,
    token_id,
)

T = TypeVar("T")

IMAGE_TOKEN_INDEX = -200  # VILA-1.5 placeholder id for one image in input_ids

QWEN2_SYSTEM = "You are a helpful assistant"  # no trailing period, as in VILA's qwen2.jinja
LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)


class _TemplateDefault:
    """Marker for "use the template's own system prompt" (None means no system block)."""

    def __repr__(self) -> str:
        return "DEFAULT_SYSTEM"


DEFAULT_SYSTEM = _TemplateDefault()
SystemPrompt = str | None | _TemplateDefault
Message = dict[str, str | None]  # {"role": "system" | "user" | "assistant", "content": text}

_DEFAULT_SYSTEMS = {"qwen2": QWEN2_SYSTEM, "llama_3": LLAMA3_SYSTEM}
# The conversation VILA renders to find a template's end-of-turn tokens (`infer_stop_tokens`):
# ten rounds whose answers are the sentinel token; whatever token follows an answer ends a turn.
_STOP_PROBE_ROUNDS = 10


def _check_template(template: str) -> None:
    if template not in _DEFAULT_SYSTEMS:
        raise ValueError(
            f"unknown chat template {template!r} (known: {', '.join(_DEFAULT_SYSTEMS)})"
        )


def _messages(
    user: str, system: SystemPrompt, assistant: str | None, empty_system: str | None
) -> list[Message]:
    """One user turn (and its answer) as messages, stripped; `system=None` becomes a system
    message with content `empty_system`, DEFAULT_SYSTEM no system message at all."""
    messages: list[Message] = []
    if system is None:
        messages.append({"role": "system", "content": empty_system})
    elif not isinstance(system, _TemplateDefault):
        messages.append({"role": "system", "content": system.strip()})
    messages.append({"role": "user", "content": user.strip()})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant.strip()})
    return messages


def render_builtin(
    template: str, messages: Sequence[Message], add_generation_prompt: bool = True
) -> str:
    """A conversation rendered by a built-in template, exactly as the lineage's code does.

    qwen2 (VILA's qwen2.jinja): `<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n`
    unless the first message is a system message, then `<|im_start|>{role}\\n{text}<|im_end|>\\n`
    per message whose content is not None, then `<|im_start|>assistant\\n` when a generation
    prompt is asked for.
    llama_3 (VILA-1.5's `llama_3` conversation, used by NaVILA): `<|begin_of_text|>` + system
    header + system text + `<|eot_id|>` (the whole block is left out for a system message whose
    content is None), then `<|start_header_id|>{role}<|end_header_id|>\\n\\n{text}` per turn; a turn
    that is not the last ends with `<|eot_id|>`, the last with `<|end_of_text|>`; the generation
    prompt is an empty last turn (the assistant header alone).
    """
    _check_template(template)
    messages = list(messages)
    system: str | None = _DEFAULT_SYSTEMS[template]
    if messages and messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
    if template == "qwen2":
        turns = [] if system is None else [("system", system)]
        turns += [(m["role"], m["content"]) for m in messages if m["content"] is not None]
        text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    header = "<|start_header_id|>{}<|end_header_id|>\n\n".format
    text = "" if system is None else f"<|begin_of_text|>{header('system')}{system}<|eot_id|>"
    turns: list[tuple[str, str | None]] = [(m["role"], m["content"]) for m in messages]
    if add_generation_prompt:
        turns.append(("assistant", None))
    for n, (role, content) in enumerate(turns):
        text += header(role)
        if content:
            text += content + ("<|eot_id|>" if n < len(turns) - 1 else "<|end_of_text|>")
    return text


def apply_chat_template(
    template: str,
    user: str,
    system: SystemPrompt = DEFAULT_SYSTEM,
    add_generation_prompt: bool = True,
    assistant: str | None = None,
) -> str:
    """One user turn (and optionally its answer) rendered by the built-in `template`
    (`render_builtin`); a checkpoint's own template is applied by `ChatFormat`.

    Messages are stripped; `system=None` drops the system block, DEFAULT_SYSTEM keeps the
    template's own. With `assistant`, the answer and its end token are rendered (a training
    target) and `add_generation_prompt` is ignored.
    """
    _check_template(template)
    messages = _messages(user, system, assistant, empty_system=None)
    return render_builtin(template, messages, add_generation_prompt and assistant is None)


def checkpoint_chat_template(tokenizer: PreTrainedTokenizerBase, template: str) -> str | None:
    """The tokenizer's own chat template when the lineage of `template` renders prompts with it,
    else None.

    "qwen2" (NVILA, VILA's `auto` conversation mode) renders with the tokenizer's template, the
    `chat_template` of llm/tokenizer_config.json (a named "default" one when there are several).
    "llama_3" (NaVILA) renders with VILA-1.5's `llama_3` conversation template, whatever the
    tokenizer carries: that is what NaVILA's code trained and runs with.
    """
    _check_template(template)
    if template != "qwen2":
        return None
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        own = own.get("default")
    return own if isinstance(own, str) and own.strip() else None


class ChatFormat:
    """How one model renders its prompts and where its answers end.

    The checkpoint's own chat template when its lineage uses one (`checkpoint_chat_template`),
    else the built-in `template` (`render_builtin`). Stop tokens are the tokens that end an
    answer in that rendering, plus the tokenizer's eos, found as VILA does: a conversation whose
    answers are the `<vila/sentinel>` token is rendered and tokenized, and every token that
    follows a sentinel is an end-of-turn token.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str):
        _check_template(template)
        self.tokenizer = tokenizer
        self.template = template
        self.own_template = checkpoint_chat_template(tokenizer, template)
        self._stop_ids: list[int] | None = None

    @property
    def source(self) -> str:
        """ "checkpoint" (the tokenizer's own template) or "built-in"."""
        return "built-in" if self.own_template is None else "checkpoint"

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """A whole conversation as prompt text."""
        if self.own_template is None:
            return render_builtin(self.template, messages, add_generation_prompt)
        return self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.own_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )

    def apply(
        self,
        user: str,
        system: SystemPrompt = DEFAULT_SYSTEM,
        add_generation_prompt: bool = True,
        assistant: str | None = None,
    ) -> str:
        """One user turn (and optionally its answer), as `apply_chat_template`.

        With the checkpoint's own template, DEFAULT_SYSTEM passes no system message (the template
        decides) and `system=None` passes an empty one, as VILA does for prompts trained without
        a system prompt.
        """
        if self.own_template is None:
            return apply_chat_template(
                self.template, user, system, add_generation_prompt, assistant
            )
        messages = _messages(user, system, assistant, empty_system="")
        return self.render(messages, add_generation_prompt and assistant is None)

    def stop_token_ids(self) -> list[int]:
        """End-of-turn token ids (in order of appearance), then the eos id, without repeats."""
        if self._stop_ids is None:
            self._stop_ids = self._find_stop_ids()
        return list(self._stop_ids)

    def _find_stop_ids(self) -> list[int]:
        sentinel = token_id(self.tokenizer, SENTINEL_TOKEN)
        if sentinel is None:
            raise ValueError(
                f"the tokenizer lacks {SENTINEL_TOKEN}, needed to find the end-of-turn tokens; "
                "load it with load_tokenizer()"
            )
        probe: list[Message] = []
        for _ in range(_STOP_PROBE_ROUNDS):
            probe += [
                {"role": "user", "content": "question"},
                {"role": "assistant", "content": SENTINEL_TOKEN},
            ]
        ids = self.tokenizer(self.render(probe, False), add_special_tokens=False).input_ids
        found = [ids[k + 1] for k in range(len(ids) - 1) if ids[k] == sentinel]
        if self.tokenizer.eos_token_id is not None:
            found.append(self.tokenizer.eos_token_id)
        if not found:
            raise ValueError(
                f"{self.source} chat template {self.template!r}: no token ends an answer and the "
                "tokenizer has no eos token"
            )
        return list(dict.fromkeys(found))


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, template: str) -> list[int]:
    """The ids that end an answer of a model with this tokenizer and `template`
    (`ChatFormat.stop_token_ids`): the end-of-turn token(s), then eos, without repeats."""
    return ChatFormat(tokenizer, template).stop_token_ids()


# ---------------------------------------------------------------- NaVILA navigation prompt
def navigation_prompt(instruction: str, num_frames: int = 8) -> str:
    """NaVILA's navigation query, verbatim: num_frames-1 history `<image>`s, then the current one.

    The odd `{history}, and current observation <image>\\n.` spacing is what the model was
    trained on. The instruction is inserted as given; see `normalize_instruction`.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    history = f"{IMAGE_TOKEN}\n" * (num_frames - 1)
    return (
        "Imagine you are a robot programmed for navigation tasks. You have been given a video "
        f"of historical observations {history}, and current observation {IMAGE_TOKEN}\n. "
        f'Your assigned task is: "{instruction}" Analyze this series of images to decide your '
        "next action, which could be turning left or right by a specific degree, moving forward "
        "a certain distance, or stop if the task is completed."
    )


NAVILA_ANSWER_PREFIX = "The next action is "


def compact_navigation_prompt(
    instruction: str, num_frames: int, previous_actions: Sequence[str] | None = None
) -> str:
    """A short navigation query for small models trained from scratch: the frames (first one of
    the instruction, latest decisions, current), the instruction, and the latest executed actions.

    Every token a small model reads costs training time, and NaVILA's ~70 tokens of fixed
    wording carry nothing; the previous actions carry what the frames cannot (how far a turn has
    gone, whether the robot just moved).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    text = f"{IMAGE_TOKEN}\n" * num_frames + f"Task: {instruction}"
    if previous_actions is not None:
        text += "\nDone: " + (", ".join(previous_actions) if previous_actions else "nothing")
    return text + "\nNext?"


_MOVE = re.compile(r"^move forward (\d+) cm$")
_TURN = re.compile(r"^turn (left|right) (\d+) degrees$")


def merge_action_runs(actions: Sequence[str]) -> list[str]:
    """Executed action phrases with consecutive moves, and consecutive turns to one side, summed
    into one phrase of the same grammar: two "turn right 45 degrees" and a "turn right 30 degrees"
    become "turn right 120 degrees". Any other phrase stays a run of its own."""
    runs: list[tuple[str, int]] = []  # (kind, amount); amount -1: a phrase kept as it is
    for action in actions:
        move, turn = _MOVE.match(action), _TURN.match(action)
        kind, amount = (
            ("move forward", int(move[1]))
            if move
            else (f"turn {turn[1]}", int(turn[2]))
            if turn
            else (action, -1)
        )
        if amount >= 0 and runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + amount)
        else:
            runs.append((kind, amount))
    units = {"move forward": "cm"}
    return [
        kind if amount < 0 else f"{kind} {amount} {units.get(kind, 'degrees')}"
        for kind, amount in runs
    ]


def navigation_answer(action_text: str, nav_prompt: str = "navila") -> str:
    """The answer a model of `nav_prompt` gives for an action phrase ("move forward 75 cm"):
    NaVILA's sentence, or the bare phrase for the compact prompt."""
    if nav_prompt == "compact":
        return action_text
    return f"{NAVILA_ANSWER_PREFIX}{action_text}."


def statement_answer(statement: str, answer: str) -> str:
    """The answer of a `nav_statement` model: its statement, then the action answer."""
    if not statement.endswith(".") or "\n" in statement:
        raise ValueError(f"a statement is one line ending in '.', got {statement!r}")
    return f"{statement} {answer}"


STATEMENT_OPENING = "Close ahead:"
"""How every statement that `names_verdict` reads begins."""

_STATED = re.compile(r"Close ahead: (.+?)\. Is (.+) close ahead\?(?: (?:Yes|No)\.)?")


def names_verdict(statement: str) -> str | None:
    """`statement` ("Close ahead: the pink shelf. Is the blue shelf close ahead? Yes.") with its
    verdict given by its two names: "Yes." exactly when the landmark it says is close ahead is
    the one it asks about, written the same (case aside), else "No."; None for a statement not of
    that form. A question without its verdict ("... close ahead?") gets one. The names must be
    written alike for alike landmarks, as navila-nano's training statements write both (the
    readout's words)."""
    stated = _STATED.fullmatch(statement)
    if stated is None:
        return None
    seen, asked = stated[1], stated[2]
    same = seen.lower() != "nothing" and seen.lower() == asked.lower()
    return f"Close ahead: {seen}. Is {asked} close ahead? {'Yes.' if same else 'No.'}"


def close_ahead_name(statement: str | None) -> str | None:
    """The landmark a statement of `names_verdict`'s form says is close ahead ("the blue door"),
    or None where it says "nothing" or is not of that form."""
    stated = None if statement is None else _STATED.fullmatch(statement)
    if stated is None or stated[1].lower() == "nothing":
        return None
    return stated[1]


def asked_name(statement: str | None) -> str | None:
    """The landmark a statement of `names_verdict`'s form asks about (the one its instruction
    stops at, "the pink table"), or None for another form."""
    stated = None if statement is None else _STATED.fullmatch(statement)
    return None if stated is None else stated[2]


def statement_of(text: str) -> str | None:
    """The statement at the front of a `nav_statement` model's answer: the text up to its last
    "." (action phrases have none), or None without one."""
    statement = text[: text.rfind(".") + 1].strip()
    return statement or None


def action_phrase(answer: str) -> str:
    """The action phrase inside a NaVILA answer sentence (a bare phrase is returned as is)."""
    return answer.removeprefix(NAVILA_ANSWER_PREFIX).removesuffix(".").strip()


def normalize_instruction(text: str) -> str:
    """NaVILA's training-time instruction clean-up, so inference text looks like training text.

    Newlines become spaces, the text is `str.capitalize()`d (first letter upper, the rest
    lower), every letter that starts a sentence is upper-cased, and spaces before a period go.
    """
    text = text.replace("\r\n", " ").replace("\n", " ").strip().capitalize()
    text = re.sub(r"([.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return re.sub(r"\s+\.", ".", text)


# ---------------------------------------------------------------- frame history
def sample_history_indices(num_available: int, num_frames: int = 8) -> list[int | None]:
    """Which frames NaVILA shows: num_frames-1 history frames spread over the whole episode + current.

    With fewer frames than num_frames, black frames (None) are put in front until there are
    num_frames. Otherwise `linspace(0, n-1, num_frames-1, endpoint=False)` truncated to int (so
    frame 0 is always kept) plus the newest frame n-1.
    """
    if num_available < 1:
        raise ValueError("the frame history is empty: need at least the current frame")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_available < num_frames:
        return [None] * (num_frames - num_available) + list(range(num_available))
    history = np.linspace(0, num_available - 1, num=num_frames - 1, endpoint=False, dtype=int)
    return [int(i) for i in history] + [num_available - 1]


def sample_recent_indices(num_decisions: int, num_frames: int) -> list[int | None]:
    """The "recent" history: the instruction's first frame, the frames of the latest
    num_frames-2 decisions before this one (None where the episode is younger), the current one.

    Indices are into the frames of the decisions so far (one frame per decision, the current
    last). Each slot keeps its meaning at every step: slot 0 is always the start view, the last
    slot always the current view, so a young episode repeats nothing but the start frame.
    """
    if num_decisions < 1:
        raise ValueError("the frame history is empty: need at least the current frame")
    if num_frames < 2:
        raise ValueError(f"the recent history needs num_frames >= 2, got {num_frames}")
    current = num_decisions - 1
    previous = range(current - (num_frames - 2), current)
    return [0] + [i if i >= 1 else None for i in previous] + [current]


def black_like(frame: T) -> T:
    """A black frame with the size and type of `frame` (PIL image, numpy array or tensor)."""
    if isinstance(frame, Image.Image):
        return Image.new(frame.mode, frame.size)
    if isinstance(frame, np.ndarray):
        return np.zeros_like(frame)
    if isinstance(frame, torch.Tensor):
        return torch.zeros_like(frame)
    raise TypeError(f"cannot make a black frame like a {type(frame).__name__}; pass pad=")


def sample_history(frames: Sequence[T], num_frames: int = 8, pad: T | None = None) -> list[T]:
    """The num_frames frames of `sample_history_indices`, black `pad` frames in front if short."""
    indices = sample_history_indices(len(frames), num_frames)
    if pad is None and None in indices:
        pad = black_like(frames[-1])
    return [pad if i is None else frames[i] for i in indices]


# ---------------------------------------------------------------- tokenization
def tokenize_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, architecture: str
) -> list[int]:
    """Token ids of a full prompt, with one id per `<image>` / `<vila/video>`.

    "nvila": a plain encoding; the media tokens are single special tokens of the tokenizer.
    "vila1.5": the text is cut at every `<image>`, the pieces are encoded separately and joined
    with IMAGE_TOKEN_INDEX (-200); only the first piece keeps the BOS the tokenizer prepends.
    """
    if architecture == "nvila":
        media_token_ids(tokenizer)  # unregistered media tokens would silently become text
        return list(tokenizer(prompt).input_ids)
    if architecture != "vila1.5":
        raise ValueError(f"unknown architecture {architecture!r} (known: nvila, vila1.5)")
    if VIDEO_TOKEN in prompt:
        raise ValueError(f"VILA-1.5 has no {VIDEO_TOKEN} token; pass the video as frames")
    ids: list[int] = []
    for n, chunk in enumerate(prompt.split(IMAGE_TOKEN)):
        if n > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += tokenizer(chunk, add_special_tokens=n == 0).input_ids
    return ids
