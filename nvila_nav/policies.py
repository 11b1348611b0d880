"""Policies: what the navigator asks for the next mid-level action (pure Python, no rclpy).

A policy sees what NaVILA sees (the instruction and 8 frames: 7 sampled from the instruction's
history, then the current one) plus the odometry pose and the simulator's episode, and answers
with raw text and its parsed `Action`. `NVILAPolicy` runs the model; `ExpertPolicy` is the
simulator's shortest-path oracle, so the ROS graph can be tested independently of model quality;
`RandomPolicy` and `ForwardPolicy` are the blind baselines a trained model must beat.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nvila_nav.actions import ALL_ACTIONS, Action, ActionKind, parse_action
from nvila_nav.history import latest_decision_slots
from nvila_nav.initial_turn import (
    bound_initial_turn,
    short_of_stated_turn,
    stated_initial_turn,
)
from nvila_nav.landmark_side import LANDMARK_SIDE_ANSWER_SET, LANDMARK_SIDE_HEAD, RouteGuide
from nvila_nav.sim.episodes import Episode, yaw_to_quaternion
from nvila_nav.sim.expert import Expert
from nvila_nav.sim.geometry import Pose
from nvila_nav.sim.world import world_for_scene
from nvila_nav.stop_reach import (
    STOP_REACH_ANSWERS,
    STOP_REACH_HEAD,
    STOP_REACH_MOVE,
    STOP_REACH_VETOES,
    within_reach,
)
from nvila_nav.turn_side import (
    ROUTE_AHEAD_ANSWERS,
    ROUTE_AHEAD_HEAD,
    ROUTE_AHEAD_MOVE,
    TURN_SIDE_ANSWERS,
    TURN_SIDE_HEAD,
    TURNS,
    follows_move,
    follows_turn,
    is_ahead,
    side_of_answer,
    with_side,
)

if TYPE_CHECKING:
    from nvila_core.model.generation import GenerationResult
    from nvila_core.runtime.engine import Engine

POLICY_KINDS: tuple[str, ...] = ("nvila", "expert", "random", "forward")
DECODINGS: tuple[str, ...] = ("generate", "choose", "choose_kind")


class PolicyUnavailable(RuntimeError):
    """The policy cannot decide with what it was given; the message says what is missing."""


@dataclass(frozen=True)
class PolicyRequest:
    """One query: the instruction, the frames in the policy's `history` form (oldest first,
    current last, black frames padding a short history), their cache keys (None where a frame
    has none), the odometry pose (x, y, yaw) and the `sim/episode` dict (the last two None when
    unknown), and the actions executed so far."""

    instruction: str
    frames: Sequence[np.ndarray]
    frame_keys: Sequence[int | None] | None = None
    pose: tuple[float, float, float] | None = None
    episode: dict[str, Any] | None = None
    previous_actions: tuple[str, ...] = ()
    """Action phrases executed since the instruction, oldest first ("move forward 75 cm")."""


@dataclass(frozen=True)
class PolicyDecision:
    """The raw answer, its parsed action (None when it names none), wall time and model timings."""

    text: str
    action: Action | None
    latency_s: float
    timings: dict[str, float | int] = field(default_factory=dict)


HISTORIES: tuple[str, ...] = ("navila", "recent")


class Policy(Protocol):
    """What the navigator needs from a policy.

    `history` says which frames a request carries: "navila" (NaVILA's sample over the whole
    episode at 2 Hz) or "recent" (the first frame, then one frame per latest decision, then the
    current one)."""

    name: str
    history: str

    def reset(self) -> None:
        """Forget per-instruction state (feature cache, plans): a new episode starts."""
        ...

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        """The next action; raises `PolicyUnavailable` when the request lacks what it needs."""
        ...

    def close(self) -> None:
        """Release what the policy holds (model weights, accelerator memory)."""
        ...


def pad_frames(frames: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Frames with each None (front padding of a short history) replaced by a black frame the
    size of the current (last) frame, as NaVILA pads."""
    current = frames[-1]
    if current is None:
        raise ValueError("the current (last) frame must not be None")
    black = np.zeros_like(current)
    return [black if frame is None else frame for frame in frames]


class NVILAPolicy:
    """NaVILA's query on an `Engine`: the engine builds the prompt and caches frame features."""

    name = "nvila"

    def __init__(
        self,
        engine: Engine,
        max_new_tokens: int = 32,
        blank_frames: bool = False,
        decoding: str = "generate",
    ):
        """blank_frames: the model only ever sees black frames (no feature cache keys either):
        the instruction-only ablation, for a model trained with `blank_frames: true` in its data
        mixture (docs/training.md). decoding: "generate" (greedy text, parsed), "choose" (the
        most probable of the ten action answers, `Engine.choose`) or "choose_kind" (the same
        scores, decided by kind first: `choose_by_kind`)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.engine = engine
        self.max_new_tokens = max_new_tokens
        self.blank_frames = blank_frames
        self.answers = None
        self.by_kind = decoding == "choose_kind"
        if decoding in ("choose", "choose_kind"):
            answer = engine.processor.navigation_answer
            self.answers = [answer(action.to_text()) for action in ALL_ACTIONS]
        for name, answers in (
            (TURN_SIDE_HEAD, TURN_SIDE_ANSWERS.values()),
            (ROUTE_AHEAD_HEAD, ROUTE_AHEAD_ANSWERS.values()),
            (STOP_REACH_HEAD, STOP_REACH_ANSWERS.values()),
            (LANDMARK_SIDE_HEAD, LANDMARK_SIDE_ANSWER_SET),
        ):
            head = engine.heads.get(name)
            if head is not None and sorted(head.answers) != sorted(answers):
                raise ValueError(
                    f"the model's {name} head answers {head.answers}, not {sorted(answers)}"
                )
            if (
                head is not None
                and head.frames > 1
                and (self.history != "recent" or head.frames > self.num_frames - 1)
            ):
                raise ValueError(
                    f"the model's {name} head reads the latest {head.frames} decision frames: "
                    f"it needs a recent-history model of at least {head.frames + 1} frames, "
                    f"this one samples {self.num_frames} ({self.history!r})"
                )
        self.turn_side = TURN_SIDE_HEAD in engine.heads
        """A model folder with a turn-side head takes the side of every turn after a move from
        it (`nvila_nav.turn_side`)."""
        self.route_ahead = ROUTE_AHEAD_HEAD in engine.heads
        """A model folder with a route-ahead head moves on instead of turning on after a turn
        wherever it answers "Yes."."""
        self.stop_reach = STOP_REACH_HEAD in engine.heads
        """A model folder with a stop-reach head moves 25 cm on instead of stopping wherever it
        answers "No." (or "Yes." below `REACH_CONFIDENCE`), up to `STOP_REACH_VETOES` times an
        episode (`nvila_nav.stop_reach`)."""
        self._reach_vetoes = 0
        self.route_guide = LANDMARK_SIDE_HEAD in engine.heads
        """A model folder with a landmark-side head heads for the next landmark of the route
        (the doorways the instruction says to go through, then the goal) wherever it is in view
        (`nvila_nav.landmark_side`)."""
        self._route = RouteGuide()
        self.initial_turn = engine.config.nav_initial_turn == "stated"
        """A model with `nav_initial_turn: stated` keeps the turn before its first move on the
        side and within the range the instruction's opening words state
        (`nvila_nav.initial_turn`)."""

    @property
    def history(self) -> str:
        return self.engine.config.nav_history

    @property
    def num_frames(self) -> int:
        """Frames per query the model was trained on; with exactly this many the engine's
        sampler is the identity, so the navigator's own sampling is what the model sees."""
        return self.engine.config.num_video_frames

    @property
    def tile_size(self) -> int:
        """The square every frame of a navigation query is resized to (frames never tile)."""
        return int(self.engine.config.tile_size)

    def reset(self) -> None:
        self.engine.clear_cache()
        self._reach_vetoes = 0
        self._route.reset()

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        start = time.perf_counter()
        frames, keys = list(request.frames), request.frame_keys
        if self.blank_frames:
            frames, keys = [np.zeros_like(frame) for frame in frames], None
        result = self.engine.navigate(
            request.instruction,
            frames,
            frame_keys=None if keys is None else list(keys),
            max_new_tokens=self.max_new_tokens,
            answers=self.answers,
            previous_actions=request.previous_actions,
        )
        text = decided_text(result, self.answers, self.by_kind)
        action = parse_action(text)
        timings = dict(result.timings)
        turning = action is not None and action.kind in TURNS
        stopping = action is not None and action.kind is ActionKind.STOP
        decisions = len(request.previous_actions) + 1
        if turning and self.turn_side and follows_move(request.previous_actions):
            side = side_of_answer(self._ask(TURN_SIDE_HEAD, frames, keys, decisions, timings)[0])
            timings["turn_side_changed"] = int(side is not action.kind)
            if side is not action.kind:
                action = with_side(action, side)
                text = action.to_text()
        elif turning and self.route_ahead and follows_turn(request.previous_actions):
            ahead = is_ahead(self._ask(ROUTE_AHEAD_HEAD, frames, keys, decisions, timings)[0])
            timings["route_ahead_changed"] = int(ahead)
            if ahead:
                action = ROUTE_AHEAD_MOVE
                text = action.to_text()
        elif stopping and self.stop_reach and self._reach_vetoes < STOP_REACH_VETOES:
            reach = within_reach(*self._ask(STOP_REACH_HEAD, frames, keys, decisions, timings))
            timings["stop_reach_changed"] = int(not reach)
            if not reach:
                self._reach_vetoes += 1
                action = STOP_REACH_MOVE
                text = action.to_text()
        stated = stated_initial_turn(request.instruction) if self.initial_turn else None
        if stated is not None and action is not None:
            bounded = bound_initial_turn(stated, request.previous_actions, action)
            timings["initial_turn_changed"] = int(bounded != action)
            if bounded != action:
                action = bounded
                text = action.to_text()
        opening_turn_done = stated is None or not short_of_stated_turn(
            stated, request.previous_actions
        )
        if self.route_guide and action is not None:
            # loaded with the engine; at module level it would load torch for every policy
            from nvila_core.model.prompting import asked_name, close_ahead_name

            def where(name: str) -> tuple[str, float] | None:
                if name not in self.engine.heads[LANDMARK_SIDE_HEAD].names:
                    return None  # a name the head never learnt (a statement's own words)
                return self._ask(LANDMARK_SIDE_HEAD, frames, keys, decisions, timings, name)

            steered = self._route.steer(
                request.instruction,
                asked_name(result.statement),
                close_ahead_name(result.statement),
                request.previous_actions,
                where,
                opening_turn_done,
            )
            if steered is not None:
                timings["route_changed"] = int(steered[1] != action)
                if steered[1] != action:
                    action = steered[1]
                    text = action.to_text()
        # a nav_statement model's statement ("... close ahead? No.") is shown in the logs; of its
        # words only the names of the goal and of what is close ahead are read (above)
        said = result.statement
        return PolicyDecision(
            text=f"{said} {text}" if said else text,
            action=action,
            latency_s=time.perf_counter() - start,
            timings=timings,
        )

    def _ask(
        self,
        head: str,
        frames: Sequence[np.ndarray],
        keys: Sequence[int | None] | None,
        decisions: int,
        timings: dict[str, float | int],
        about: str | None = None,
    ) -> tuple[str, float]:
        """The answer of frame head `head` (about the name `about`, for a named question) on
        the visual tokens of the current frame, or of the latest decisions' frames where it
        reads more (cached where a frame has a key), and that answer's probability;
        `decisions` counts the current one; its time goes into timings["<head>_ms"]."""
        asked = time.perf_counter()
        slots = latest_decision_slots(decisions, len(frames), self.engine.heads[head].frames)
        answer, probs = self.engine.ask_head(
            head,
            [frames[slot] for slot in slots],
            None if keys is None else [keys[slot] for slot in slots],
            about,
        )
        timings[f"{head}_ms"] = timings.get(f"{head}_ms", 0.0) + (time.perf_counter() - asked) * 1e3
        return answer, max(probs)

    def close(self) -> None:
        """Drop the model; accelerator memory goes back once nothing else references it."""
        device = self.engine.backend.device
        del self.engine
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def episode_from_message(data: dict[str, Any]) -> Episode:
    """An `Episode` from the `sim/episode` JSON (goal, radius, start_yaw, ...) or from an
    R2R-format episode dict (goals, start_rotation, ...)."""
    if "goals" in data:
        return Episode.from_dict(data)
    info = {"goal_landmark": data["goal_landmark"]} if data.get("goal_landmark") else {}
    if data.get("initial_turn_deg"):
        info["initial_turn_deg"] = float(data["initial_turn_deg"])
    return Episode.from_dict(
        {
            "episode_id": data["episode_id"],
            "scene_id": data["scene_id"],
            "start_position": data.get("start_position", [0.0, 0.0, 0.0]),
            "start_rotation": yaw_to_quaternion(float(data.get("start_yaw", 0.0))),
            "goals": [{"position": data["goal"], "radius": data.get("radius")}],
            "reference_path": data.get("reference_path") or [],
            "instruction": data.get("instruction", ""),
            "info": info,
        }
    )


class ExpertPolicy:
    """The simulator's shortest-path expert on the current episode and odometry pose (an oracle).

    It plans on the scene's navigation grid only (no MuJoCo model, no renderer) and ignores the
    frames and the instruction wording: it tests the graph, not language grounding.
    """

    name = "expert"
    history = "navila"

    def __init__(self) -> None:
        self._episode_data: dict[str, Any] | None = None
        self._expert: Expert | None = None

    def reset(self) -> None:
        self._episode_data = None
        self._expert = None

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        if request.episode is None:
            raise PolicyUnavailable(
                "the expert policy needs the episode from sim/episode (is the simulator running "
                "and has it loaded an episode?)"
            )
        if request.pose is None:
            raise PolicyUnavailable("the expert policy needs the robot pose from odom")
        start = time.perf_counter()
        if self._expert is None or request.episode != self._episode_data:
            try:
                episode = episode_from_message(request.episode)
                self._expert = Expert(world_for_scene(episode.scene_id), episode)
            except (KeyError, TypeError, ValueError) as error:
                raise PolicyUnavailable(
                    f"cannot plan on the episode from sim/episode: {error!r}"
                ) from error
            self._episode_data = request.episode
        action = self._expert.next_action(Pose(*request.pose))
        return PolicyDecision(
            text=action.to_answer(), action=action, latency_s=time.perf_counter() - start
        )

    def close(self) -> None:
        self.reset()


class RandomPolicy:
    """Uniform over NaVILA's ten actions (stop included): the chance-level baseline.

    Each instruction gets its own generator, seeded by (seed, instruction text), so a run is
    reproducible episode by episode while different episodes get different action sequences."""

    name = "random"
    history = "navila"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng: np.random.Generator | None = None

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, zlib.crc32(request.instruction.encode())])
        action = ALL_ACTIONS[int(self._rng.integers(len(ALL_ACTIONS)))]
        return PolicyDecision(text=action.to_answer(), action=action, latency_s=0.0)

    def close(self) -> None:
        """Holds nothing."""


class ForwardPolicy:
    """Always "move forward 75 cm" and never stop: the no-perception baseline (episodes end at the
    evaluator's action or time limit)."""

    name = "forward"
    history = "navila"
    ACTION = Action.forward(75)

    def reset(self) -> None:
        """Stateless."""

    def decide(self, request: PolicyRequest) -> PolicyDecision:
        return PolicyDecision(text=self.ACTION.to_answer(), action=self.ACTION, latency_s=0.0)

    def close(self) -> None:
        """Holds nothing."""


def choose_by_kind(log_probs: Sequence[float]) -> int:
    """Index into ALL_ACTIONS of the most probable amount of the most probable kind.

    `log_probs` scores ALL_ACTIONS in order. The kind (forward, turn left, turn right, stop)
    gets the probability of all its amounts together: a model unsure whether a turn is 15, 30
    or 45 degrees spreads its belief in turning over three answers, and the single most
    probable answer would then be "move forward 75 cm" even where turning is more likely.
    """
    if len(log_probs) != len(ALL_ACTIONS):
        raise ValueError(f"expected {len(ALL_ACTIONS)} scores (ALL_ACTIONS), got {len(log_probs)}")
    scores = np.asarray(log_probs, dtype=np.float64)
    probs = np.exp(scores - scores.max())
    by_kind: defaultdict[ActionKind, float] = defaultdict(float)
    for action, p in zip(ALL_ACTIONS, probs, strict=True):
        by_kind[action.kind] += float(p)
    kind = max(by_kind, key=by_kind.__getitem__)
    members = [i for i, action in enumerate(ALL_ACTIONS) if action.kind is kind]
    return max(members, key=lambda i: probs[i])


def decided_text(result: GenerationResult, answers: Sequence[str] | None, by_kind: bool) -> str:
    """The answer a navigation query decided: the engine's text, or with `by_kind` (decoding
    choose_kind) the answer `choose_by_kind` picks from the engine's scores of `answers`."""
    if not by_kind:
        return result.text
    if answers is None or result.answer_log_probs is None:
        raise ValueError("choose_kind needs the scores of the ten answers (decoding by choice)")
    return answers[choose_by_kind(result.answer_log_probs)].strip()


def make_policy(
    kind: str,
    model: str = "tiny",
    backend: str = "torch",
    device: str = "auto",
    dtype: str | None = None,
    cache_frames: int = 128,
    max_new_tokens: int = 32,
    seed: int = 0,
    blank_frames: bool = False,
    decoding: str = "generate",
    threads: int = 0,
) -> Policy:
    """The policy `kind` ("nvila" loads `model`, which may take long; "expert", "random" and
    "forward" ignore the model arguments). device "auto" picks CUDA when available; dtype None/""
    keeps the checkpoint's; `seed` seeds "random"; `blank_frames` blinds "nvila"; `decoding`
    is "nvila"'s generate | choose | choose_kind; `threads` its CPU threads (0: the library's
    default; `Engine.from_pretrained`)."""
    if kind == "expert":
        return ExpertPolicy()
    if kind == "random":
        return RandomPolicy(seed)
    if kind == "forward":
        return ForwardPolicy()
    if kind != "nvila":
        raise ValueError(f"unknown policy {kind!r}; choose from {', '.join(POLICY_KINDS)}")
    # Imported here so the expert policy runs without torch.
    import torch

    from nvila_core.runtime.engine import Engine

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = Engine.from_pretrained(
        model,
        backend=backend,
        device=device,
        dtype=dtype or None,
        cache_frames=cache_frames,
        threads=threads,
    )
    return NVILAPolicy(engine, max_new_tokens, blank_frames, decoding)
