"""The side of a turn read from the current frame alone: "Which way does the route turn?".

A navigation model trained by behaviour cloning turns, after a forward move, to the side it
turned last: its executed actions and its recent frames both say which side that was, and in
the expert's data that guess is right two times in three. In the closed loop its own turns then
feed it, and it circles. The current frame shows where the route goes (walls, the doorway, the
open floor): a small head on the model's visual tokens of that frame, trained on this question
(`nvila-sim turn-sides`, then `nvila-core train-head --name turn_side`), reads the side that the
LLM leaves unread. A model folder with that head takes a turn's side from it wherever the turn
follows a move; the navigation query still decides whether to turn, and by how much.
"""

from __future__ import annotations

from collections.abc import Sequence

from nvila_nav.actions import Action, ActionKind, parse_action

TURN_SIDE_HEAD = "turn_side"
"""The frame head's name in a model folder (`nvila_core.model.frame_head`)."""
TURN_SIDE_PROMPT = "<image>\nWhich way does the route turn?"
TURN_SIDE_ANSWERS: dict[ActionKind, str] = {
    ActionKind.TURN_LEFT: "Left.",
    ActionKind.TURN_RIGHT: "Right.",
}
TURNS = tuple(TURN_SIDE_ANSWERS)


def follows_move(previous_actions: Sequence[str]) -> bool:
    """Whether the latest executed action was a forward move: the state where a turn's side
    is a new decision, not the continuation of a turn in progress."""
    if not previous_actions:
        return False
    last = parse_action(previous_actions[-1])
    return last is not None and last.kind is ActionKind.FORWARD


def turn_side_answer(action: Action) -> str:
    """The question's answer for a turn action ("Left." / "Right.")."""
    try:
        return TURN_SIDE_ANSWERS[action.kind]
    except KeyError:
        raise ValueError(f"{action.to_text()!r} is not a turn") from None


def side_of_answer(answer: str) -> ActionKind:
    """The turn kind an answer of the question names."""
    for kind, said in TURN_SIDE_ANSWERS.items():
        if said == answer:
            return kind
    raise ValueError(f"{answer!r} is not an answer of {TURN_SIDE_PROMPT!r}")


def with_side(action: Action, side: ActionKind) -> Action:
    """A turn `action` to `side`, by the same angle."""
    if action.kind not in TURNS or side not in TURNS:
        raise ValueError(f"cannot give {action.to_text()!r} the side {side.value}")
    return Action(side, action.amount)
