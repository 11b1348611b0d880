"""Closed-loop execution of NaVILA mid-level actions, with safety checks before any motion.

NaVILA's Isaac loop plays each action open loop (0.5 m/s or π/6 rad/s for a fixed time). A real
base slips and lags, so `MotionController` closes the loop on odometry instead: it drives until
the odometry says the distance or angle is done, and it stops at once on e-stop, stale or
invalid odometry, a silent action stream or a timeout. A forward move that makes no progress
(the robot pushes a wall) ends early as BLOCKED: VLN-CE executes such a move as a no-op, so the
agent is asked again instead of waiting for the timeout. It is pure logic: the motion_controller
node calls `update()` at a fixed rate with the latest odometry and publishes the returned twist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum

from nvila_nav.actions import Action, ActionKind

# Longest time step the acceleration limiter credits. After a starved control loop the base may
# already have zeroed its command, so a long gap must not buy a large speed step.
_MAX_LIMITER_STEP_S = 0.1


class ControllerState(str, Enum):
    """What the controller is doing; every state except EXECUTING commands zero velocity."""

    IDLE = "idle"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    TIMED_OUT = "timed_out"
    BLOCKED = "blocked"
    STOPPED = "stopped"
    ESTOPPED = "estopped"
    AWAITING_RESUME = "awaiting_resume"
    """The e-stop was released; nothing moves until `resume()` (reset is not restart)."""
    WATCHDOG = "watchdog"


@dataclass(frozen=True)
class ControllerLimits:
    """Speed, acceleration, tolerance and watchdog limits (SI units, radians).

    Speeds default to NaVILA's fixed commands, so one action takes about as long as in training
    and the 2 Hz frame history still sees one frame per 25 cm / 15° step.
    """

    max_linear_speed: float = 0.5
    max_angular_speed: float = math.pi / 6
    max_linear_accel: float = 1.0
    max_angular_accel: float = 2.0
    distance_tolerance: float = 0.02
    angle_tolerance: float = math.radians(1.5)
    timeout_factor: float = 2.0
    timeout_margin_s: float = 1.0
    odom_timeout_s: float = 0.5
    action_stream_timeout_s: float = 0.5
    blocked_timeout_s: float = 1.0
    """A forward move that gains less than `blocked_progress_m` in this long is BLOCKED."""
    blocked_progress_m: float = 0.02

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field.name} must be finite and > 0, got {value}")
        if self.timeout_factor < 1:
            raise ValueError(f"timeout_factor must be >= 1, got {self.timeout_factor}")

    def action_timeout_s(self, action: Action) -> float:
        """Time allowed for `action`: its duration at full speed × factor + margin."""
        nominal_s = (
            action.distance_m / self.max_linear_speed + abs(action.yaw_rad) / self.max_angular_speed
        )
        return nominal_s * self.timeout_factor + self.timeout_margin_s


@dataclass(frozen=True)
class Pose2D:
    """Planar pose from odometry: position in metres, yaw in radians (REP 103, CCW positive)."""

    x: float
    y: float
    yaw: float

    def is_finite(self) -> bool:
        return math.isfinite(self.x) and math.isfinite(self.y) and math.isfinite(self.yaw)


@dataclass(frozen=True)
class ControlOutput:
    """One control tick: the twist to publish, the state, why, and the completion event.

    `action_finished` is True on exactly one output per started action, the first one after the
    action ended in any way (succeeded, timed out, cancelled, e-stopped, watchdog); the navigator
    uses it to ask the model for the next action. An action replaced by a new `start()` before
    that output was produced reports nothing: the caller already moved on.
    """

    vx: float
    wz: float
    state: ControllerState
    reason: str
    action_finished: bool = False


def _toward(target: float, previous: float, max_step: float) -> float:
    """`target`, except that speeding up is limited to `max_step`; slowing down is immediate.

    Reversing counts as stopping (free) and then speeding up from zero the other way.
    """
    if previous * target < 0:
        previous = 0.0
    if abs(target) <= abs(previous):
        return target
    return previous + math.copysign(min(abs(target) - abs(previous), max_step), target)


def _braking_speed(remaining: float, max_speed: float, accel: float) -> float:
    """Fastest speed from which braking at `accel` still stops within `remaining`, capped."""
    return min(max_speed, math.sqrt(2.0 * accel * max(remaining, 0.0)))


class MotionController:
    """Executes one mid-level action at a time on odometry feedback; safety first.

    Safety rules, checked on every `update()` before any motion is computed:
    - e-stop: zero twist on the next update in every state. The e-stop is latched until
      `set_estop(False)`; the interrupted action is reported finished and is NOT resumed on
      release (the world may have changed; the navigator must decide again). Release alone does
      not allow motion either (ISO 13850: reset is not restart): the state becomes
      AWAITING_RESUME and `start()` stays refused until an explicit `resume()`.
    - odometry missing, older than `odom_timeout_s`, or NaN/inf, and an action stream silent for
      longer than `action_stream_timeout_s` (no `heartbeat()`), abort the running action with
      state WATCHDOG. Aborting rather than pausing means the robot never moves on its own again
      after a fault.
    - acceleration limits only restrict speeding up; every stop is immediate.
    - a forward move whose progress along the start heading grows by less than
      `blocked_progress_m` for `blocked_timeout_s` ends at once with state BLOCKED (zero twist):
      the robot is pushing an obstacle. This is an executed move without effect (VLN-CE's
      collision semantics), not a controller fault; turns are never blocked.

    Motion follows a trapezoidal profile: ramp up at the acceleration limit, cruise, then brake
    along the curve that would bring a base decelerating at that limit to rest on the goal.
    Success is declared once within tolerance, so a base that honours the deceleration settles
    on the goal and a base that stops instantly halts at most one tolerance short, never beyond.
    """

    def __init__(self, limits: ControllerLimits | None = None, control_period_s: float = 0.0):
        """control_period_s: how often the caller updates. A started action's first update may
        then speed up by one period's worth at once (the command holds until the next update),
        so a caller that updates right after `start()` moves the robot without waiting a tick."""
        if not (math.isfinite(control_period_s) and control_period_s >= 0):
            raise ValueError(f"control_period_s must be finite and >= 0, got {control_period_s}")
        self._limits = limits or ControllerLimits()
        self._control_period_s = min(control_period_s, _MAX_LIMITER_STEP_S)
        self._state = ControllerState.IDLE
        self._reason = "no action yet"
        self._action: Action | None = None
        self._start_pose = Pose2D(0.0, 0.0, 0.0)
        self._deadline_s = 0.0
        self._last_heartbeat_s = -math.inf
        self._last_update_s = 0.0
        self._command = (0.0, 0.0)
        self._estop = False
        self._finish_pending = False
        self._best_progress = 0.0
        self._progress_at_s = 0.0

    @property
    def state(self) -> ControllerState:
        return self._state

    @property
    def action(self) -> Action | None:
        """The action started last (kept after it ends, for logging), or None."""
        return self._action

    def start(self, action: Action, pose: Pose2D | None, now_s: float) -> bool:
        """Begin `action` from `pose`, replacing any running one; False if it was refused.

        Refused while the e-stop is latched (state stays ESTOPPED), after its release until
        `resume()` (state stays AWAITING_RESUME), and when `pose` is missing or not finite (state
        WATCHDOG, twist zero); a refused action reports no completion event. STOP needs no
        pose: it succeeds at once and zeroes the twist.
        """
        if self._estop:
            self._reason = f"e-stop active, refused {action.to_text()}"
            return False
        if self._state is ControllerState.AWAITING_RESUME:
            self._reason = f"e-stop released, waiting for resume; refused {action.to_text()}"
            return False
        self._action = action
        self._finish_pending = False
        self._last_heartbeat_s = now_s
        self._last_update_s = now_s - self._control_period_s
        if action.is_stop:
            self._finish(ControllerState.SUCCEEDED, "stop")
            return True
        if pose is None or not pose.is_finite():
            self._state = ControllerState.WATCHDOG
            self._reason = f"no finite odometry to start {action.to_text()}"
            self._command = (0.0, 0.0)
            return False
        self._start_pose = pose
        self._deadline_s = now_s + self._limits.action_timeout_s(action)
        self._best_progress = 0.0
        self._progress_at_s = now_s
        self._state = ControllerState.EXECUTING
        self._reason = f"executing {action.to_text()}"
        return True

    def cancel(self) -> None:
        """Stop the running action; the next update commands zero and reports it finished."""
        if self._state is ControllerState.EXECUTING:
            self._finish(ControllerState.STOPPED, "cancelled")

    @property
    def estop(self) -> bool:
        """Whether the e-stop is latched (engaged and not yet released)."""
        return self._estop

    @property
    def reason(self) -> str:
        """Why the controller is in its state (also why the last `start()` was refused)."""
        return self._reason

    def set_estop(self, active: bool, reason: str = "e-stop active") -> None:
        """Latch (True) or release (False) the emergency stop; release does not resume motion:
        the state becomes AWAITING_RESUME until `resume()`."""
        if active and not self._estop:
            if self._state is ControllerState.EXECUTING:
                self._finish_pending = True
            self._estop = True
            self._state = ControllerState.ESTOPPED
            self._reason = reason
            self._command = (0.0, 0.0)
        elif not active and self._estop:
            self._estop = False
            self._state = ControllerState.AWAITING_RESUME
            self._reason = "e-stop released, waiting for resume"

    def resume(self) -> tuple[bool, str]:
        """The explicit command that allows motion again after an e-stop was released.

        Returns (accepted, why). Refused while the e-stop is still active; in every other state
        but AWAITING_RESUME there is nothing to resume (accepted, nothing changes).
        """
        if self._estop:
            return False, "e-stop still active: release it first, then resume"
        if self._state is ControllerState.AWAITING_RESUME:
            self._state = ControllerState.IDLE
            self._reason = "resumed after e-stop; waiting for an action"
            return True, "resumed: actions are executed again"
        return True, "nothing to resume: no e-stop was released since the last resume"

    def heartbeat(self, now_s: float) -> None:
        """Record that the action stream (the navigator) is alive."""
        self._last_heartbeat_s = now_s

    def update(
        self, pose: Pose2D | None, odom_stamp_s: float | None, now_s: float
    ) -> ControlOutput:
        """One control tick with the latest odometry (None if none ever arrived) and its stamp."""
        if self._state is ControllerState.EXECUTING:
            fault = self._safety_fault(pose, odom_stamp_s, now_s)
            if fault is not None:
                self._finish(ControllerState.WATCHDOG, fault)
            else:
                self._track(pose, now_s)
        vx, wz = self._command
        output = ControlOutput(vx, wz, self._state, self._reason, self._finish_pending)
        self._finish_pending = False
        return output

    def _finish(self, state: ControllerState, reason: str) -> None:
        self._state = state
        self._reason = reason
        self._command = (0.0, 0.0)
        self._finish_pending = True

    def _safety_fault(
        self, pose: Pose2D | None, odom_stamp_s: float | None, now_s: float
    ) -> str | None:
        """Why the robot must stop now, or None when odometry and action stream are healthy."""
        limits = self._limits
        if not math.isfinite(now_s):
            return f"controller clock is not finite ({now_s})"
        if pose is None or odom_stamp_s is None:
            return "no odometry received"
        if not (pose.is_finite() and math.isfinite(odom_stamp_s)):
            return f"odometry contains NaN/inf: {pose}, stamp {odom_stamp_s}"
        odom_age_s = now_s - odom_stamp_s
        if odom_age_s > limits.odom_timeout_s:
            return f"odometry is {odom_age_s:.2f} s old (limit {limits.odom_timeout_s:.2f} s)"
        silent_s = now_s - self._last_heartbeat_s
        if silent_s > limits.action_stream_timeout_s:
            return (
                f"action stream silent for {silent_s:.2f} s "
                f"(limit {limits.action_stream_timeout_s:.2f} s)"
            )
        return None

    def _track(self, pose: Pose2D, now_s: float) -> None:
        """Advance the running action: succeed within tolerance, time out, or command motion."""
        limits = self._limits
        action = self._action
        start = self._start_pose
        step_s = min(max(now_s - self._last_update_s, 0.0), _MAX_LIMITER_STEP_S)
        self._last_update_s = now_s
        if action.kind is ActionKind.FORWARD:
            # Progress along the start heading, so sideways drift does not count as distance.
            progress = (pose.x - start.x) * math.cos(start.yaw) + (pose.y - start.y) * math.sin(
                start.yaw
            )
            remaining = action.distance_m - progress
            if remaining <= limits.distance_tolerance:
                self._finish(
                    ControllerState.SUCCEEDED,
                    f"{action.to_text()} done, {remaining * 100:+.1f} cm from goal",
                )
                return
            if progress > self._best_progress + limits.blocked_progress_m:
                self._best_progress = progress
                self._progress_at_s = now_s
            elif now_s - self._progress_at_s > limits.blocked_timeout_s:
                self._finish(
                    ControllerState.BLOCKED,
                    f"{action.to_text()} blocked after {progress * 100:.1f} cm: less than "
                    f"{limits.blocked_progress_m * 100:g} cm progress in "
                    f"{limits.blocked_timeout_s:g} s",
                )
                return
            target = _braking_speed(remaining, limits.max_linear_speed, limits.max_linear_accel)
            vx = _toward(target, self._command[0], limits.max_linear_accel * step_s)
            command = (vx, 0.0)
            remaining_text = f"{remaining * 100:.1f} cm"
        else:
            yaw_error = math.remainder(start.yaw + action.yaw_rad - pose.yaw, math.tau)
            if abs(yaw_error) <= limits.angle_tolerance:
                self._finish(
                    ControllerState.SUCCEEDED,
                    f"{action.to_text()} done, {math.degrees(yaw_error):+.1f} deg from goal",
                )
                return
            speed = _braking_speed(
                abs(yaw_error), limits.max_angular_speed, limits.max_angular_accel
            )
            target = math.copysign(speed, yaw_error)
            wz = _toward(target, self._command[1], limits.max_angular_accel * step_s)
            command = (0.0, wz)
            remaining_text = f"{math.degrees(abs(yaw_error)):.1f} deg"
        if now_s > self._deadline_s:
            self._finish(
                ControllerState.TIMED_OUT,
                f"{action.to_text()} timed out after "
                f"{limits.action_timeout_s(action):.1f} s, {remaining_text} left",
            )
            return
        self._command = command
