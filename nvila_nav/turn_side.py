"""Two turn decisions read from the frames, not from the actions executed: "Which way does the
route turn?" and "Is the route straight ahead?".

A navigation model trained by behaviour cloning turns, after a forward move, to the side it
turned last: its executed actions and its recent frames both say which side that was, and in
the expert's data that guess is right two times in three. In the closed loop its own turns then
feed it, and it circles. Once turning, it also keeps turning: its turns come in runs of 135°
and more three times as often as the expert's. The current frame shows where the route goes
(walls, the doorway, the open floor), and with the frame before a move, where the route went:
small heads on the model's visual tokens of those frames, trained on these questions
(`nvila-sim turn-sides` / `route-ahead`, then `nvila-core train-head`), read what the LLM leaves
unread. A model folder with the `turn_side` head takes
the side of a turn from it wherever the turn follows a move; one with the `route_ahead` head
moves forward instead of turning on wherever it answers "Yes." just after a turn. The
navigation query still decides everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

from nvila_nav.actions import Action, ActionKind, parse_action

TURN_SIDE_HEAD = "turn_side"
"""The frame head's name in a model folder (`nvila_core.model.frame_head`)."""
TURN_SIDE_FRAMES = 2
"""The turn-side head reads the frame of the decision before (the view before the move) and the
current one: what changed between the two shows where the route went, better than the current
frame alone."""
TURN_SIDE_PROMPT = "<image>\n" * TURN_SIDE_FRAMES + "Which way does the route turn?"
TURN_SIDE_ANSWERS: dict[ActionKind, str] = {
    ActionKind.TURN_LEFT: "Left.",
    ActionKind.TURN_RIGHT: "Right.",
}
TURNS = tuple(TURN_SIDE_ANSWERS)

ROUTE_AHEAD_HEAD = "route_ahead"
ROUTE_AHEAD_FRAMES = 1
"""The route-ahead head reads the current frame only. Given the frame the turn was decided on as
well, it answered more held-out questions right, yet the robot reached fewer goals with it."""
ROUTE_AHEAD_PROMPT = "<image>\n" * ROUTE_AHEAD_FRAMES + "Is the route straight ahead?"
ROUTE_AHEAD_ANSWERS: dict[bool, str] = {True: "Yes.", False: "No."}
ROUTE_AHEAD_MOVE = Action.forward(75)
"""What a turn becomes where the route is straight ahead: the longest move, as the expert
takes straight on."""


def follows_move(previous_actions: Sequence[str]) -> bool:
    """Whether the latest executed action was a forward move: the state where a turn's side
    is a new decision, not the continuation of a turn in progress."""
    if not previous_actions:
        return False
    last = parse_action(previous_actions[-1])
    return last is not None and last.kind is ActionKind.FORWARD


def follows_turn(previous_actions: Sequence[str]) -> bool:
    """Whether the latest executed action was a turn: the state where turning on continues a
    turn in progress."""
    if not previous_actions:
        return False
    last = parse_action(previous_actions[-1])
    return last is not None and last.kind in TURNS


def route_ahead_answer(action: Action) -> str:
    """The question's answer for the action taken after a turn: "Yes." for a move, "No." for a
    turn."""
    if action.kind is ActionKind.FORWARD:
        return ROUTE_AHEAD_ANSWERS[True]
    if action.kind in TURNS:
        return ROUTE_AHEAD_ANSWERS[False]
    raise ValueError(f"{action.to_text()!r} is neither a move nor a turn")


def is_ahead(answer: str) -> bool:
    """Whether a route-ahead answer says the route is straight ahead."""
    for ahead, said in ROUTE_AHEAD_ANSWERS.items():
        if said == answer:
            return ahead
    raise ValueError(f"{answer!r} is not an answer of {ROUTE_AHEAD_PROMPT!r}")


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
