"""The stop-reach question on rollout frames: "Is the goal within reach?" at every state whose
statement says the landmark the instruction stops at is close ahead ("... close ahead? Yes."),
answered "Yes." where the goal point is within `REACH_M` (`nvila_nav.stop_reach`).

Expert rollouts written without a stop band approach the goal to 0.3 m, so their "Yes." states
span the whole of "close ahead", from about 2 m down; `write_question_dataset` writes the
dataset (`nvila-sim stop-reach`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nvila_nav.sim.turn_sides import stated_states
from nvila_nav.stop_reach import (
    STOP_REACH_ANSWERS,
    STOP_REACH_HEAD,
    STOP_REACH_PROMPT,
    reach_answer,
)

GOAL_CLOSE_AHEAD = "close ahead? Yes."
"""How a rollout's statement ends where the named landmark is close ahead (`stop_statement`)."""


@dataclass(frozen=True)
class StopReachQuestion:
    """A frame question (`FrameQuestion`) whose states come from the statements and poses, not
    from the expert's labels as the turn questions' do."""

    head: str = STOP_REACH_HEAD
    prompt: str = STOP_REACH_PROMPT
    answers: tuple[str, ...] = tuple(STOP_REACH_ANSWERS.values())
    file: str = "stop_reach.json"
    frames: int = 1

    def states(self, meta: dict) -> list[tuple[int, str]]:
        """(action index, answer) of every state of an episode's meta.json whose statement says
        the goal's landmark is close ahead, by the distance from its pose to the goal point.
        History-only actions (contrast episodes' "context") are never asked about."""
        goal = meta["episode"]["goals"][0]["position"]
        return [
            (k, reach_answer(math.dist(action["pose"][:2], goal[:2])))
            for k, action in stated_states(meta)
            if action["statement"].endswith(GOAL_CLOSE_AHEAD)
        ]


STOP_REACH = StopReachQuestion()
