"""The navigator's decision logic as a plain state machine (no rclpy), testable without a node.

States: idle → (instruction) → querying → executing (the action is out, waiting for the
controller's `action_result`) → querying → … → stopped. Events come from the node's callbacks
(`instruct`, `stop`, `reset`, `on_result`, `set_estop`, frames, pose, episode); the node's worker
thread calls `poll` for the next query, runs the policy outside any lock, and hands the decision
to `complete`. Every call returns the `Command`s to publish, in order.

Behaviour decisions:
- NaVILA's history is per instruction: a new instruction resets the frame history (it starts
  with the current view) and the policy, and replaces the current instruction at once. If an
  action is executing, "stop" goes out first, so the robot never finishes a move meant for the
  old instruction. An idle or stopped navigator publishes nothing for a new instruction.
- "stop" / "halt" as the instruction, the `navigator/stop` service and the policy saying stop end
  the instruction with a published "stop" (state stopped).
- Unparseable output (or a policy that cannot decide) is re-queried up to `max_reparse` times;
  then "stop" is published and the instruction ends. Unparseable text is never published.
- Controller results: "succeeded" → query again. "blocked" (a forward move into an obstacle,
  executed as a no-op as VLN-CE does) → query again; it is not a failure. "estopped" while our
  e-stop is active → wait for the release, then query again (not a failure). timed_out,
  watchdog, rejected, cancelled (someone else's action replaced ours), an estopped we did not
  see coming, and no result within
  `result_timeout_s` are failures: query again (the robot may have moved only part of the way, and
  the next query sees where it is) until `max_controller_failures` in a row, then stop.
- Results are matched by count: the controller answers every message on `action` exactly once,
  in order, so a result is for the current action only when it is the last one outstanding (and
  names that action). Results for preempted actions and for our stops are consumed silently.
- Frames: a query starts only when the newest frame is at most `max_frame_age_s` old (no
  decisions on a frozen camera). Waiting longer than `frame_timeout_s` for one ends the
  instruction. Frame stamps and `now_s` must share a clock (use_sim_time with a simulator).
- E-stop: reset is not restart. An instruction that is running when the e-stop engages
  (querying or executing) is paused: nothing new is published, a decision that arrives meanwhile
  is discarded, and releasing the e-stop does not continue it. It continues (asked again on
  fresh frames) only on an explicit resume: the motion controller reporting "ready" again on
  `motion_controller/state` after its resume (`resume`), or a new instruction, which replaces
  it. An instruction given while the e-stop is engaged is an explicit command: it starts once
  the e-stop is released and the controller is ready.
- Motion controller state (`set_controller_state`, the words of `motion_controller/state`):
  while a controller has said it is not "ready" (estopped, awaiting_resume) no query starts, so
  no action is sent to be refused; a controller that never says anything is not waited for.
- Camera loss while an action executes: when no frame has arrived for `camera_loss_timeout_s`
  (arrival time on this node's clock), "stop" goes out at once so the robot does not drive
  blind; the instruction then waits for fresh frames as before a query (`frame_timeout_s`, then
  it ends with camera_timeout).
- Every "stop" that ends an instruction carries why (`Command.end`, one of `END_REASONS`), so an
  evaluator can tell the agent's own stop (`agent_stopped`) from a stop the navigator made for
  it (controller failures, unusable output, a frozen camera, a stop request). Stops that only
  replace an action (preemption, reset) carry none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from nvila_nav.actions import Action, ActionKind
from nvila_nav.history import DecisionHistory, FrameHistory
from nvila_nav.policies import PolicyDecision, PolicyRequest, pad_frames

STOP_INSTRUCTIONS = frozenset({"stop", "halt"})
"""Instructions (case and punctuation aside) that end the current one instead of starting one."""

CLOCK_JUMP_S = 1.0
"""A frame stamped this much before the newest one means time went backwards (a simulator or a
bag restarted): the old frames belong to another run, so the history starts over."""

ARROW_LENGTH_M = 0.5
"""Length of the marker arrow that shows the heading after a turn."""

END_AGENT_STOPPED = "agent_stopped"
"""The policy said stop: the only end that can count as success."""
END_CONTROLLER_FAILURES = "controller_failures"
END_NO_USABLE_ACTION = "no_usable_action"
END_CAMERA_TIMEOUT = "camera_timeout"
END_STOP_REQUESTED = "stop_requested"
"""A "stop" instruction, the navigator/stop service, deactivation or shutdown."""
END_REASONS = (
    END_AGENT_STOPPED,
    END_CONTROLLER_FAILURES,
    END_NO_USABLE_ACTION,
    END_CAMERA_TIMEOUT,
    END_STOP_REQUESTED,
)


class NavState(str, Enum):
    IDLE = "idle"
    QUERYING = "querying"
    EXECUTING = "executing"
    PAUSED = "paused"
    """Interrupted by an e-stop; continues only on an explicit resume or a new instruction."""
    STOPPED = "stopped"


CONTROLLER_READY = "ready"
"""The motion controller's word (motion_controller/state) for "actions are executed"."""


class Level(str, Enum):
    """Severity of the status, mapped to diagnostic_msgs levels by the node."""

    OK = "ok"
    WARN = "warn"
    ERROR = "error"


@dataclass(frozen=True)
class NavigationConfig:
    max_reparse: int = 1
    max_controller_failures: int = 3
    max_frame_age_s: float = 1.0
    frame_timeout_s: float = 5.0
    result_timeout_s: float = 10.0
    """0 waits for a controller result forever."""
    camera_loss_timeout_s: float = 0.3
    """No frame for this long while an action executes stops it; 0 disables the check."""

    def __post_init__(self) -> None:
        if self.max_reparse < 0:
            raise ValueError(f"max_reparse must be >= 0, got {self.max_reparse}")
        if self.max_controller_failures < 1:
            raise ValueError(
                f"max_controller_failures must be >= 1, got {self.max_controller_failures}"
            )
        for name in ("max_frame_age_s", "frame_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        for name in ("result_timeout_s", "camera_loss_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")


def relative_goal(action: Action) -> tuple[float, float, float]:
    """The action as a goal (x, y, yaw) in the base frame at the decision: forward d → (d, 0, 0),
    turn θ → (0, 0, θ), stop → (0, 0, 0)."""
    return (action.distance_m, 0.0, action.yaw_rad)


@dataclass(frozen=True)
class Command:
    """One action to publish on `action`, with what `action_goal` and the markers show for it.

    stamp_s: time the goal is relative to (the stamp of the frame the decision was made on, or
    the event's time for stops). end: for the "stop" that ends an instruction, why it ended (one
    of END_REASONS); empty for every other command.
    """

    action: Action
    instruction: str
    reason: str
    stamp_s: float
    end: str = ""

    @property
    def text(self) -> str:
        return self.action.to_text()

    @property
    def goal(self) -> tuple[float, float, float]:
        return relative_goal(self.action)

    @property
    def label(self) -> str:
        """Marker text: the instruction and the action."""
        return f"{self.instruction or '(no instruction)'}\n→ {self.text}"

    @property
    def arrow(self) -> tuple[float, float] | None:
        """Marker arrow tip (x, y) in the base frame: the goal of a forward move, a unit heading
        for a turn, None (no arrow) for stop."""
        x, _, yaw = self.goal
        if self.action.kind is ActionKind.FORWARD:
            return (x, 0.0)
        if self.action.is_stop:
            return None
        return (ARROW_LENGTH_M * math.cos(yaw), ARROW_LENGTH_M * math.sin(yaw))


@dataclass(frozen=True)
class Query:
    """A policy call the worker must make; `generation` ties it to one instruction."""

    generation: int
    request: PolicyRequest
    frame_stamp_s: float


@dataclass(frozen=True)
class Poll:
    """What the worker should do now: publish `commands`, reset the policy if asked (before any
    query), then run `query` if there is one."""

    commands: list[Command]
    query: Query | None
    reset_policy: bool


@dataclass(frozen=True)
class NavigatorStatus:
    """Status fields for `navigator/status` and `diagnostics`."""

    state: NavState
    level: Level
    message: str
    instruction: str
    last_action: str
    last_output: str
    last_latency_s: float | None
    vision_ms: float | None
    history_length: int
    cache_hit_rate: float | None
    queries: int
    failures: int
    frame_age_s: float | None
    estop: bool
    episode_id: str

    def values(self) -> dict[str, str]:
        """Key/values as diagnostic strings ("none" where unknown)."""

        def number(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
            return "none" if value is None else f"{value * scale:.{digits}f}"

        return {
            "state": self.state.value,
            "instruction": self.instruction,
            "last_action": self.last_action,
            "last_output": self.last_output,
            "last_latency_ms": number(self.last_latency_s, 1e3),
            "vision_ms": number(self.vision_ms),
            "history_length": str(self.history_length),
            "cache_hit_rate": number(self.cache_hit_rate, digits=3),
            "queries": str(self.queries),
            "failures": str(self.failures),
            "frame_age_s": number(self.frame_age_s, digits=3),
            "e_stop": str(self.estop).lower(),
            "episode": self.episode_id,
        }


def is_stop_instruction(text: str) -> bool:
    return re.sub(r"[^a-z]", "", text.lower()) in STOP_INSTRUCTIONS


class Navigator:
    """The state machine. Not thread-safe: the node serialises all calls with one lock."""

    def __init__(
        self,
        history: FrameHistory[np.ndarray],
        config: NavigationConfig | None = None,
        decisions: DecisionHistory[np.ndarray] | None = None,
    ):
        """`decisions`: query with the "recent" history (first view, views of the latest
        executed decisions, current view) instead of NaVILA's sample of `history`."""
        self.history = history
        self.decisions = decisions
        self.config = config or NavigationConfig()
        self.state = NavState.IDLE
        self.instruction = ""
        self._generation = 0
        self._level = Level.OK
        self._message = "waiting for an instruction"
        self._estop = False
        self._pose: tuple[float, float, float] | None = None
        self._episode: dict[str, Any] | None = None
        self._reset_policy = False
        self._pending_results = 0
        self._current: Command | None = None
        self._sent_at = 0.0
        self._due_since = 0.0
        self._reparses = 0
        self._failures = 0
        self._last_command: Command | None = None
        self._executed: list[str] = []
        self._frame_arrival_s: float | None = None
        self._camera_lost = False
        self._dropped_frames = 0
        self._last_drop = ""
        self._controller_state: str | None = None
        self._clear_stats()

    def _clear_stats(self) -> None:
        self._last_decision: PolicyDecision | None = None
        self._queries = 0
        self._vit_passes = 0
        self._cached_frames = 0

    # --- inputs ----------------------------------------------------------------------------

    def offer_frame(
        self, frame: np.ndarray, stamp_s: float, arrival_s: float | None = None
    ) -> bool:
        """Offer a camera frame to the history; True when time jumped back and it restarted.
        `arrival_s`: when it arrived on the caller's clock (the camera-loss check), default
        `stamp_s`."""
        self._frame_arrival_s = stamp_s if arrival_s is None else arrival_s
        self._camera_lost = False
        latest = self.history.latest
        jumped = latest is not None and stamp_s < latest.stamp_s - CLOCK_JUMP_S
        if jumped:
            self.history.reset()
        self.history.offer(frame, stamp_s)
        return jumped

    def set_pose(self, x: float, y: float, yaw: float) -> None:
        self._pose = (x, y, yaw)

    def set_episode(self, episode: dict[str, Any]) -> None:
        self._episode = episode

    def frame_alive(self, arrival_s: float) -> None:
        """A camera frame arrived that is not offered (a rate cap): the camera is alive."""
        self._frame_arrival_s = arrival_s

    def drop_frame(self, reason: str) -> None:
        """A camera frame could not be used (its reason is named when the camera times out)."""
        self._dropped_frames += 1
        self._last_drop = reason

    def set_estop(self, active: bool, now_s: float) -> bool:
        """E-stop engaged (a running instruction is paused) or released (a paused instruction
        stays paused until `resume` or a new instruction); returns whether it changed."""
        changed = active != self._estop
        self._estop = active
        if changed and active:
            self._pause("e-stop engaged")
        elif changed:
            self._due_since = now_s
            if self.state is NavState.PAUSED:
                self._set(
                    Level.WARN,
                    "e-stop released: paused until resume (motion_controller/resume) or a new "
                    "instruction",
                )
        return changed

    def set_controller_state(self, word: str, now_s: float) -> bool:
        """The motion controller's state word; returns True when it resumed a paused instruction
        (the controller became ready again after an e-stop: its explicit resume)."""
        previous, self._controller_state = self._controller_state, word
        if word != CONTROLLER_READY:
            if word == "estopped":
                self._pause("the motion controller is e-stopped")
            return False
        if previous in (None, CONTROLLER_READY) or self.state is not NavState.PAUSED:
            return False
        return self.resume(now_s)

    def resume(self, now_s: float) -> bool:
        """Continue a paused instruction (asked again on fresh frames); False when nothing is
        paused or the e-stop is still engaged."""
        if self.state is not NavState.PAUSED or self._estop:
            return False
        self.state = NavState.QUERYING
        self._due_since = now_s
        self._reparses = 0
        self._set(Level.OK, "resumed")
        return True

    def _pause(self, why: str) -> None:
        if self.state not in (NavState.QUERYING, NavState.EXECUTING):
            return
        self._generation += 1  # a decision in flight is discarded
        self._current = None
        self.state = NavState.PAUSED
        self._set(Level.WARN, f"paused: {why}; needs resume or a new instruction after release")

    def instruct(self, text: str, now_s: float) -> list[Command]:
        """A new instruction replaces the current one at once; "stop"/"halt" ends it."""
        text = text.strip()
        if not text:
            return []
        if is_stop_instruction(text):
            return self.stop(f'instruction "{text}"', now_s, end=END_STOP_REQUESTED)
        commands = []
        if self.state is NavState.EXECUTING:
            commands.append(self._emit(Action.stop(), "preempted by a new instruction", now_s))
        latest = self.history.latest
        self._restart(now_s)
        self.instruction = text
        self.state = NavState.QUERYING
        self._set(Level.OK, "new instruction")
        if latest is not None:
            # The instruction's history starts with the current view, so the first query need
            # not wait for the next camera frame.
            self.history.offer(latest.frame, latest.stamp_s)
        return commands

    def stop(
        self,
        reason: str,
        now_s: float,
        level: Level = Level.OK,
        end: str = END_STOP_REQUESTED,
    ) -> list[Command]:
        """End the instruction and publish "stop" (zero motion), whatever the state; `end` says
        why (END_REASONS)."""
        if end not in END_REASONS:
            raise ValueError(f"unknown end reason {end!r}")
        command = self._emit(Action.stop(), reason, now_s, end)
        self._end(NavState.STOPPED, level, f"stopped: {reason}")
        return [command]

    def reset(self, now_s: float) -> list[Command]:
        """Forget the instruction, history and policy state (a new episode); a running action
        is stopped."""
        commands = []
        if self.state is NavState.EXECUTING:
            commands.append(self._emit(Action.stop(), "reset", now_s))
        self._restart(now_s)
        self.instruction = ""
        self._end(NavState.IDLE, Level.OK, "reset; waiting for an instruction")
        return commands

    def on_result(self, text: str, now_s: float) -> list[Command]:
        """An `action_result` "<state> <action text>" from the controller."""
        if self._pending_results == 0:
            return []  # an answer to someone else's action
        self._pending_results -= 1
        current = self._current
        if self._pending_results or self.state is not NavState.EXECUTING or current is None:
            return []
        word, _, action_text = text.strip().partition(" ")
        if action_text != current.text:
            self._set(Level.WARN, f"ignored action_result {text!r}: waiting for {current.text!r}")
            return []
        self._current = None
        if word == "succeeded":
            self._failures = 0
            self._executed.append(current.text)
            return self._query_again(now_s, Level.OK, f"done: {current.text}")
        if word == "blocked":
            self._failures = 0
            self._executed.append(current.text)
            return self._query_again(now_s, Level.WARN, f"blocked (no-op): {current.text}")
        if word == "estopped" and self._estop:
            return self._query_again(now_s, Level.WARN, "e-stop: waiting for release")
        return self._controller_failed(f"controller: {text.strip()}", now_s)

    # --- worker ----------------------------------------------------------------------------

    def poll(self, now_s: float) -> Poll:
        """Timeouts, and the next query when one is due (a fresh frame, no e-stop)."""
        reset_policy, self._reset_policy = self._reset_policy, False
        commands: list[Command] = []
        timeout = self.config.result_timeout_s
        if self.state is NavState.EXECUTING and timeout and now_s - self._sent_at > timeout:
            # Whatever was outstanding will not be answered (controller down or restarted).
            self._pending_results = 0
            self._current = None
            commands += self._controller_failed(f"no action_result within {timeout:g} s", now_s)
        loss = self.config.camera_loss_timeout_s
        if self.state is NavState.EXECUTING and loss:
            silent = None if self._frame_arrival_s is None else now_s - self._frame_arrival_s
            if silent is None or silent > loss:
                lost = (
                    "no camera frame" if silent is None else f"no camera frame for {silent:.2f} s"
                )
                commands.append(self._emit(Action.stop(), f"camera lost: {lost}", now_s))
                self._current = None
                self._camera_lost = True  # the next query waits for a frame that arrives later
                self._query_again(now_s, Level.WARN, f"camera lost while moving ({lost}): stopped")
        if self.state is not NavState.QUERYING:
            return Poll(commands, None, reset_policy)
        if self._estop:
            self._due_since = now_s
            self._set(Level.WARN, "e-stop active: no new actions")
            return Poll(commands, None, reset_policy)
        if self._controller_state not in (None, CONTROLLER_READY):
            self._due_since = now_s
            self._set(Level.WARN, f"waiting for the motion controller ({self._controller_state})")
            return Poll(commands, None, reset_policy)
        latest = self.history.latest
        age = None if latest is None else now_s - latest.stamp_s
        if age is None or abs(age) > self.config.max_frame_age_s or self._camera_lost:
            waited = now_s - self._due_since
            seen = "no camera frame" if age is None else f"newest camera frame is {age:.2f} s old"
            if self._camera_lost:
                seen = "no camera frame since the camera was lost"
            if waited > self.config.frame_timeout_s:
                commands += self.stop(
                    f"{seen} after waiting {waited:.1f} s ({self._camera_diagnosis()})",
                    now_s,
                    Level.ERROR,
                    END_CAMERA_TIMEOUT,
                )
            else:
                self._set(Level.WARN, f"waiting for a fresh frame: {seen}")
            return Poll(commands, None, reset_policy)
        if self.decisions is not None:
            frames, keys = self.decisions.sample(latest.frame, latest.key)
        else:
            frames, keys = self.history.sample()
        request = PolicyRequest(
            instruction=self.instruction,
            frames=pad_frames(frames),
            frame_keys=keys,
            pose=self._pose,
            episode=self._episode,
            previous_actions=tuple(self._executed),
        )
        return Poll(commands, Query(self._generation, request, latest.stamp_s), reset_policy)

    def complete(
        self, query: Query, outcome: PolicyDecision | Exception, now_s: float
    ) -> list[Command]:
        """The policy's decision for `query`, or what it raised; stale answers are dropped."""
        if query.generation != self._generation or self.state is not NavState.QUERYING:
            return []
        decision = outcome if isinstance(outcome, PolicyDecision) else None
        if decision is not None:
            self._last_decision = decision
            self._queries += 1
            self._vit_passes += int(decision.timings.get("vit_passes", 0))
            self._cached_frames += int(decision.timings.get("cached_frames", 0))
        if self._estop:
            return self._query_again(now_s, Level.WARN, "e-stop: decision discarded")
        action = None if decision is None else decision.action
        if action is None:
            why = (
                f"unparseable output {decision.text!r}"
                if decision is not None
                else f"policy failed: {outcome}"
            )
            if self._reparses < self.config.max_reparse:
                self._reparses += 1
                return self._query_again(now_s, Level.WARN, f"re-querying: {why}")
            return self.stop(
                f"no usable action in {self._reparses + 1} queries (last: {why})",
                now_s,
                Level.ERROR,
                END_NO_USABLE_ACTION,
            )
        self._reparses = 0
        if action.is_stop:
            return self.stop("the policy said stop", now_s, end=END_AGENT_STOPPED)
        command = self._emit(action, "policy", query.frame_stamp_s)
        if self.decisions is not None:
            keys = query.request.frame_keys
            self.decisions.record(query.request.frames[-1], keys[-1] if keys else None)
        self._current = command
        self._sent_at = now_s
        self.state = NavState.EXECUTING
        self._set(Level.OK, f"executing {command.text}")
        return [command]

    def _camera_diagnosis(self) -> str:
        """Why no usable frame came: frames dropped (naming the last reason), or none at all."""
        if self._last_drop:
            return f"{self._dropped_frames} camera frames dropped, the last for: {self._last_drop}"
        return "camera down, or its stamps on another clock than this node: use_sim_time?"

    # --- status ----------------------------------------------------------------------------

    def status(self, now_s: float) -> NavigatorStatus:
        latest = self.history.latest
        decision = self._last_decision
        shown = self._vit_passes + self._cached_frames
        return NavigatorStatus(
            state=self.state,
            level=self._level,
            message=self._message,
            instruction=self.instruction,
            last_action=self._last_command.text if self._last_command else "",
            last_output=decision.text if decision else "",
            last_latency_s=decision.latency_s if decision else None,
            vision_ms=float(decision.timings["vision_ms"])
            if decision and "vision_ms" in decision.timings
            else None,
            history_length=len(self.history),
            cache_hit_rate=self._cached_frames / shown if shown else None,
            queries=self._queries,
            failures=self._failures,
            frame_age_s=None if latest is None else now_s - latest.stamp_s,
            estop=self._estop,
            episode_id=str(self._episode.get("episode_id", "")) if self._episode else "none",
        )

    # --- internals -------------------------------------------------------------------------

    def _emit(self, action: Action, reason: str, stamp_s: float, end: str = "") -> Command:
        """A command the node will publish; its result joins the ones outstanding."""
        command = Command(action, self.instruction, reason, stamp_s, end)
        self._pending_results += 1
        self._last_command = command
        return command

    def _set(self, level: Level, message: str) -> None:
        self._level, self._message = level, message

    def _restart(self, now_s: float) -> None:
        """A fresh episode for history, policy and counters (new instruction or reset)."""
        self._generation += 1
        self.history.reset()
        if self.decisions is not None:
            self.decisions.reset()
        self._executed = []
        self._reset_policy = True
        self._current = None
        self._reparses = 0
        self._failures = 0
        self._due_since = now_s
        self._clear_stats()

    def _end(self, state: NavState, level: Level, message: str) -> None:
        self._generation += 1  # a query in flight is for an instruction that is over
        self.state = state
        self._current = None
        self._set(level, message)

    def _query_again(self, now_s: float, level: Level, message: str) -> list[Command]:
        self.state = NavState.QUERYING
        self._due_since = now_s
        self._set(level, message)
        return []

    def _controller_failed(self, why: str, now_s: float) -> list[Command]:
        self._failures += 1
        if self._failures >= self.config.max_controller_failures:
            return self.stop(
                f"{self._failures} controller failures in a row ({why})",
                now_s,
                Level.ERROR,
                END_CONTROLLER_FAILURES,
            )
        return self._query_again(
            now_s, Level.WARN, f"re-querying after failure {self._failures}: {why}"
        )
