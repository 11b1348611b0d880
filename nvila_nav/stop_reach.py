"""Whether a stop is within reach of the goal, read from the current frame: "Is the goal within
reach?".

navila-nano's statement says whether the landmark the instruction stops at is close ahead, and
"close ahead" reaches about 2 m, where success needs the stop within 1.5 m of the goal. How far
the landmark is shows in the frame (how much of the view it fills), so a small head on the
model's visual tokens, trained at the states whose statement says the named landmark is close
ahead (`nvila-sim stop-reach`, then `nvila-core train-head`), tells a stop in reach from one
that is still short. A model folder with the `stop_reach` head moves forward 25 cm instead of
stopping where the head answers "No.", at most `STOP_REACH_VETOES` times per episode, so that a
goal the robot cannot come nearer to (a wall, furniture in the way) still ends in its stop.
"""

from __future__ import annotations

from nvila_nav.actions import Action

STOP_REACH_HEAD = "stop_reach"
"""The frame head's name in a model folder (`nvila_core.model.frame_head`)."""
STOP_REACH_PROMPT = "<image>\nIs the goal within reach?"
STOP_REACH_ANSWERS: dict[bool, str] = {True: "Yes.", False: "No."}
REACH_M = 1.2
"""A state is within reach where the goal point is at most this far (the success radius is
1.5 m; the margin covers the head's error in depth)."""
STOP_REACH_MOVE = Action.forward(25)
"""What a stop short of the goal becomes: the shortest move, towards the landmark in view."""
STOP_REACH_VETOES = 3
"""Stops turned into moves per episode at most; the next stop stands."""
REACH_CONFIDENCE = 0.75
"""A "Yes." less probable than this counts as "No.". Of navila-nano's stops on the held-out
tier A and C episodes, all 83 within the success radius had "Yes." at 0.77 or more; 4 of the 19
outside it, made at a look-alike or at nothing, had 0.54-0.66."""


def reach_answer(distance_m: float) -> str:
    """The question's answer at a state `distance_m` from the goal point."""
    if distance_m < 0:
        raise ValueError(f"a distance is never negative, got {distance_m}")
    return STOP_REACH_ANSWERS[distance_m <= REACH_M]


def within_reach(answer: str, probability: float = 1.0) -> bool:
    """Whether a stop-reach answer, given with `probability`, says the goal is within reach
    (a "Yes." needs `REACH_CONFIDENCE`)."""
    for reach, said in STOP_REACH_ANSWERS.items():
        if said == answer:
            return reach and probability >= REACH_CONFIDENCE
    raise ValueError(f"{answer!r} is not an answer of {STOP_REACH_PROMPT!r}")
