"""Tests for the closed-loop action controller against a simulated unicycle base."""

import itertools
import math
from dataclasses import dataclass, field

import pytest

from nvila_nav.actions import Action
from nvila_nav.controller import (
    ControllerLimits,
    ControllerState,
    ControlOutput,
    MotionController,
    Pose2D,
)

LIMITS = ControllerLimits()
RATES_HZ = (20, 50)


@dataclass
class Unicycle:
    """A differential-drive base that follows the commanded twist exactly, unless blocked.

    `lateral_drift` (m/s, to the robot's left) models wheel slip while driving forward.
    """

    pose: Pose2D = field(default_factory=lambda: Pose2D(0.0, 0.0, 0.0))
    blocked: bool = False
    lateral_drift: float = 0.0

    def step(self, vx: float, wz: float, dt: float) -> None:
        if self.blocked:
            return
        x, y, yaw = self.pose.x, self.pose.y, self.pose.yaw
        mid_yaw = yaw + 0.5 * wz * dt
        drift = self.lateral_drift * dt if vx else 0.0
        self.pose = Pose2D(
            x + vx * dt * math.cos(mid_yaw) - drift * math.sin(mid_yaw),
            y + vx * dt * math.sin(mid_yaw) + drift * math.cos(mid_yaw),
            math.remainder(yaw + wz * dt, math.tau),
        )


def run(
    controller: MotionController,
    robot: Unicycle,
    action: Action,
    rate_hz: float,
    duration_s: float = 10.0,
    stop_when_finished: bool = True,
) -> list[tuple[float, ControlOutput]]:
    """Start `action` at t=0, then tick at `rate_hz` with fresh odometry and heartbeats."""
    dt = 1.0 / rate_hz
    assert controller.start(action, robot.pose, 0.0)
    trace = []
    for tick in range(1, round(duration_s * rate_hz) + 1):
        now = tick * dt
        controller.heartbeat(now)
        output = controller.update(robot.pose, now, now)
        trace.append((now, output))
        robot.step(output.vx, output.wz, dt)
        if output.action_finished and stop_when_finished:
            break
    return trace


def progress_along(start: Pose2D, pose: Pose2D) -> float:
    return (pose.x - start.x) * math.cos(start.yaw) + (pose.y - start.y) * math.sin(start.yaw)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize("cm", [25, 50, 75])
def test_forward_reaches_distance_within_tolerance_without_overshoot(cm, rate_hz):
    start = Pose2D(1.0, -2.0, 2.0)
    robot = Unicycle(start)
    trace = run(MotionController(), robot, Action.forward(cm), rate_hz)
    final = trace[-1][1]
    assert final.state is ControllerState.SUCCEEDED
    assert final.action_finished
    assert (final.vx, final.wz) == (0.0, 0.0)
    travelled = progress_along(start, robot.pose)
    assert cm / 100 - LIMITS.distance_tolerance <= travelled <= cm / 100
    assert all(output.wz == 0.0 and output.vx >= 0.0 for _, output in trace)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
@pytest.mark.parametrize(
    "action",
    [Action.left(d) for d in (15, 30, 45)] + [Action.right(d) for d in (15, 30, 45)],
    ids=str,
)
def test_turns_reach_angle_within_tolerance(action, rate_hz):
    start = Pose2D(0.0, 0.0, 0.3)
    robot = Unicycle(start)
    trace = run(MotionController(), robot, action, rate_hz)
    assert trace[-1][1].state is ControllerState.SUCCEEDED
    error = math.remainder(start.yaw + action.yaw_rad - robot.pose.yaw, math.tau)
    assert abs(error) <= LIMITS.angle_tolerance
    assert robot.pose.x == robot.pose.y == 0.0
    assert all(
        math.copysign(1.0, o.wz) == math.copysign(1.0, action.yaw_rad) for _, o in trace[:-1]
    )


@pytest.mark.parametrize(
    ("start_deg", "action", "goal_deg"),
    [(170, Action.left(30), -160), (-170, Action.right(45), 145)],
)
def test_turn_across_plus_minus_pi_takes_the_short_way(start_deg, action, goal_deg):
    robot = Unicycle(Pose2D(0.0, 0.0, math.radians(start_deg)))
    trace = run(MotionController(), robot, action, 50)
    assert trace[-1][1].state is ControllerState.SUCCEEDED
    error = math.remainder(math.radians(goal_deg) - robot.pose.yaw, math.tau)
    assert abs(error) <= LIMITS.angle_tolerance
    assert trace[-1][0] < 2.0  # a 30-45 degree turn, not nearly a full circle


def test_sideways_drift_does_not_count_as_forward_progress():
    start = Pose2D(0.0, 0.0, 0.0)
    robot = Unicycle(start, lateral_drift=0.2)
    trace = run(MotionController(), robot, Action.forward(75), 50)
    assert trace[-1][1].state is ControllerState.SUCCEEDED
    assert robot.pose.y > 0.1
    assert 0.75 - LIMITS.distance_tolerance <= robot.pose.x <= 0.75


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_profile_respects_speed_and_acceleration_limits(rate_hz):
    dt = 1.0 / rate_hz
    for action, limit_speed, accel, component in [
        (Action.forward(75), LIMITS.max_linear_speed, LIMITS.max_linear_accel, "vx"),
        (Action.left(45), LIMITS.max_angular_speed, LIMITS.max_angular_accel, "wz"),
    ]:
        trace = run(MotionController(), Unicycle(), action, rate_hz)
        speeds = [0.0] + [abs(getattr(output, component)) for _, output in trace]
        assert max(speeds) == pytest.approx(limit_speed)  # long enough to reach cruise
        assert max(speeds) <= limit_speed
        for before, after in itertools.pairwise(speeds):
            assert after - before <= accel * dt + 1e-12
        # Planned braking is gradual too: only the final stop at the goal may drop to zero.
        braking = [before - after for before, after in itertools.pairwise(speeds[:-1])]
        assert max(braking) <= accel * dt * 1.5


def test_forward_takes_about_as_long_as_navila_open_loop():
    trace = run(MotionController(), Unicycle(), Action.forward(75), 50)
    duration = trace[-1][0]
    # NaVILA: 1.5 s at 0.5 m/s; ramps at 1 m/s^2 add 0.5 s in total.
    assert 1.5 < duration < 2.2


def test_forward_into_a_wall_ends_blocked_after_the_blocked_timeout():
    """VLN-CE executes a forward step into a wall as a no-op: the move ends BLOCKED as soon as
    it has made no progress for blocked_timeout_s, long before its timeout."""
    action = Action.forward(75)
    trace = run(MotionController(), Unicycle(blocked=True), action, 20)
    now, final = trace[-1]
    assert final.state is ControllerState.BLOCKED
    assert final.action_finished
    assert (final.vx, final.wz) == (0.0, 0.0)
    assert "blocked after 0.0 cm" in final.reason
    assert LIMITS.blocked_timeout_s < now <= LIMITS.blocked_timeout_s + 1 / 20
    assert now < LIMITS.action_timeout_s(action)
    assert all(output.vx > 0 for _, output in trace[:-1])


def test_wall_part_way_blocks_only_after_progress_stops():
    """Progress resets the blocked timer: a robot that drives 30 cm and then hits a wall is
    blocked blocked_timeout_s after it stopped advancing."""
    robot = Unicycle()
    controller = MotionController()
    assert controller.start(Action.forward(75), robot.pose, 0.0)
    dt, wall_at = 0.05, None
    for tick in range(1, 200):
        now = tick * dt
        controller.heartbeat(now)
        output = controller.update(robot.pose, now, now)
        if robot.pose.x >= 0.30 and not robot.blocked:
            robot.blocked, wall_at = True, now
        robot.step(output.vx, output.wz, dt)
        if output.action_finished:
            break
    assert output.state is ControllerState.BLOCKED
    assert "blocked after 3" in output.reason
    assert (
        wall_at + LIMITS.blocked_timeout_s - 2 * dt
        < now
        <= wall_at + LIMITS.blocked_timeout_s + 2 * dt
    )


def test_slow_progress_is_not_blocked_and_times_out():
    """A base that creeps (3 cm/s) keeps making progress: not blocked, the timeout ends it."""
    action = Action.forward(75)
    controller = MotionController()
    pose = Pose2D(0.0, 0.0, 0.0)
    assert controller.start(action, pose, 0.0)
    dt = 0.05
    for tick in range(1, 400):
        now = tick * dt
        controller.heartbeat(now)
        output = controller.update(pose, now, now)
        pose = Pose2D(pose.x + 0.03 * dt, 0.0, 0.0)
        if output.action_finished:
            break
    assert output.state is ControllerState.TIMED_OUT
    timeout = LIMITS.action_timeout_s(action)
    assert timeout == pytest.approx(0.75 / 0.5 * 2.0 + 1.0)
    assert timeout < now <= timeout + dt


def test_a_turn_that_cannot_turn_times_out_and_is_never_blocked():
    trace = run(MotionController(), Unicycle(blocked=True), Action.left(30), 20)
    now, final = trace[-1]
    assert now > LIMITS.action_timeout_s(Action.left(30))
    assert final.state is ControllerState.TIMED_OUT and "timed out" in final.reason
    assert (final.vx, final.wz) == (0.0, 0.0)


def test_estop_mid_action_zeroes_next_tick_latches_and_does_not_resume():
    controller = MotionController()
    robot = Unicycle()
    trace = run(controller, robot, Action.forward(75), 50, duration_s=0.6)
    assert trace[-1][1].vx == pytest.approx(LIMITS.max_linear_speed)
    controller.set_estop(True)
    first = controller.update(robot.pose, 0.62, 0.62)
    assert (first.vx, first.wz, first.state) == (0.0, 0.0, ControllerState.ESTOPPED)
    assert first.action_finished
    later = [controller.update(robot.pose, t / 50, t / 50) for t in range(32, 80)]
    assert all((o.vx, o.wz, o.state) == (0.0, 0.0, ControllerState.ESTOPPED) for o in later)
    assert not any(o.action_finished for o in later)
    assert not controller.start(Action.left(15), robot.pose, 1.6)
    assert controller.action == Action.forward(75)  # the refused action did not replace it
    assert controller.update(robot.pose, 1.62, 1.62).state is ControllerState.ESTOPPED
    controller.set_estop(False)
    released = controller.update(robot.pose, 1.64, 1.64)
    assert (released.vx, released.wz) == (0.0, 0.0)
    assert released.state is ControllerState.AWAITING_RESUME
    assert released.reason == "e-stop released, waiting for resume"
    assert controller.resume() == (True, "resumed: actions are executed again")
    assert controller.update(robot.pose, 1.65, 1.65).state is ControllerState.IDLE
    assert controller.start(Action.forward(25), robot.pose, 1.66)
    assert controller.update(robot.pose, 1.68, 1.68).vx > 0.0


def test_release_alone_never_restarts_motion():
    """Reset is not restart: after the release every action is refused until resume()."""
    controller = MotionController()
    robot = Unicycle()
    run(controller, robot, Action.forward(75), 50, duration_s=0.4)
    controller.set_estop(True)
    controller.set_estop(False)
    outputs = []
    for tick, action in enumerate([Action.forward(25), Action.left(15), Action.stop()]):
        now = 0.5 + tick * 0.02
        assert not controller.start(action, robot.pose, now)
        assert controller.reason == (
            f"e-stop released, waiting for resume; refused {action.to_text()}"
        )
        outputs.append(controller.update(robot.pose, now, now))
    assert all((o.vx, o.wz) == (0.0, 0.0) for o in outputs)
    assert all(o.state is ControllerState.AWAITING_RESUME for o in outputs)
    assert controller.action == Action.forward(75)  # refused actions replace nothing


def test_resume_is_refused_while_latched_and_a_no_op_otherwise():
    controller = MotionController()
    ok, why = controller.resume()
    assert ok and why.startswith("nothing to resume")
    assert controller.state is ControllerState.IDLE
    controller.set_estop(True)
    assert controller.resume() == (False, "e-stop still active: release it first, then resume")
    assert controller.state is ControllerState.ESTOPPED and controller.estop
    controller.set_estop(True, "again")  # repeated engage changes nothing
    assert controller.reason == "e-stop active"
    controller.set_estop(False)
    controller.set_estop(False)  # repeated release too
    assert controller.state is ControllerState.AWAITING_RESUME and not controller.estop
    assert controller.resume()[0] and controller.state is ControllerState.IDLE


def test_estop_while_idle_blocks_and_reports_no_completion():
    controller = MotionController()
    controller.set_estop(True)
    output = controller.update(Pose2D(0, 0, 0), 0.0, 0.0)
    assert output.state is ControllerState.ESTOPPED and not output.action_finished


def test_stale_odometry_stops_within_one_tick_after_timeout():
    rate_hz = 50
    controller = MotionController()
    robot = Unicycle()
    run(controller, robot, Action.forward(75), rate_hz, duration_s=0.4)
    last_odom_stamp, frozen_pose = 0.4, robot.pose
    outputs = []
    for tick in range(21, 60):
        now = tick / rate_hz
        controller.heartbeat(now)
        outputs.append((now, controller.update(frozen_pose, last_odom_stamp, now)))
    stopped = [(now, o) for now, o in outputs if o.state is ControllerState.WATCHDOG]
    first_stop_time, first_stop = stopped[0]
    assert (first_stop.vx, first_stop.wz) == (0.0, 0.0)
    assert first_stop.action_finished and "odometry is" in first_stop.reason
    assert 0.5 < first_stop_time - last_odom_stamp <= 0.5 + 1 / rate_hz
    assert all(o.vx > 0 for now, o in outputs if now < first_stop_time)
    assert all(o.vx == 0.0 for _, o in stopped)


@pytest.mark.parametrize(
    ("pose", "stamp", "fragment"),
    [
        (Pose2D(float("nan"), 0.0, 0.0), 0.1, "NaN/inf"),
        (Pose2D(0.0, 0.0, float("inf")), 0.1, "NaN/inf"),
        (Pose2D(0.0, 0.0, 0.0), float("nan"), "NaN/inf"),
        (None, None, "no odometry"),
    ],
)
def test_invalid_or_missing_odometry_zeroes_with_reason(pose, stamp, fragment):
    controller = MotionController()
    controller.start(Action.forward(50), Pose2D(0.0, 0.0, 0.0), 0.0)
    assert controller.update(Pose2D(0.0, 0.0, 0.0), 0.05, 0.05).vx > 0
    output = controller.update(pose, stamp, 0.1)
    assert (output.vx, output.wz, output.state) == (0.0, 0.0, ControllerState.WATCHDOG)
    assert fragment in output.reason


def test_silent_action_stream_trips_the_watchdog():
    controller = MotionController()
    pose = Pose2D(0.0, 0.0, 0.0)
    controller.start(Action.left(45), pose, 0.0)
    outputs = [(t / 50, controller.update(pose, t / 50, t / 50)) for t in range(1, 40)]
    tripped = [now for now, o in outputs if o.state is ControllerState.WATCHDOG]
    assert tripped[0] == pytest.approx(0.52)
    assert "action stream silent" in outputs[25][1].reason
    assert all(o.wz == 0.0 for now, o in outputs if now >= tripped[0])


def test_start_without_finite_odometry_is_refused():
    controller = MotionController()
    assert not controller.start(Action.forward(25), None, 0.0)
    output = controller.update(None, None, 0.05)
    assert (output.vx, output.state, output.action_finished) == (
        0.0,
        ControllerState.WATCHDOG,
        False,
    )


def test_completion_event_fires_exactly_once():
    controller = MotionController()
    trace = run(
        controller, Unicycle(), Action.right(30), 50, stop_when_finished=False, duration_s=3
    )
    assert sum(output.action_finished for _, output in trace) == 1
    assert trace[-1][1].state is ControllerState.SUCCEEDED


def test_stop_action_zeroes_immediately_and_succeeds_once():
    controller = MotionController()
    robot = Unicycle()
    run(controller, robot, Action.forward(75), 50, duration_s=0.6)
    assert controller.start(Action.stop(), None, 0.6)
    first = controller.update(robot.pose, 0.62, 0.62)
    assert (first.vx, first.wz, first.state, first.action_finished) == (
        0.0,
        0.0,
        ControllerState.SUCCEEDED,
        True,
    )
    assert not controller.update(robot.pose, 0.64, 0.64).action_finished


def test_cancel_zeroes_on_next_update_and_reports_stopped_once():
    controller = MotionController()
    robot = Unicycle()
    run(controller, robot, Action.forward(75), 50, duration_s=0.5)
    controller.cancel()
    first = controller.update(robot.pose, 0.52, 0.52)
    second = controller.update(robot.pose, 0.54, 0.54)
    assert (first.vx, first.state, first.action_finished) == (0.0, ControllerState.STOPPED, True)
    assert (second.vx, second.state, second.action_finished) == (
        0.0,
        ControllerState.STOPPED,
        False,
    )


def test_new_action_replaces_running_one_without_a_completion_event():
    controller = MotionController()
    robot = Unicycle()
    run(controller, robot, Action.forward(75), 50, duration_s=0.5)
    assert controller.state is ControllerState.EXECUTING
    assert controller.start(Action.left(15), robot.pose, 0.5)
    output = controller.update(robot.pose, 0.52, 0.52)
    assert output.state is ControllerState.EXECUTING and not output.action_finished
    assert output.vx == 0.0 and output.wz > 0.0


def test_acceleration_limit_survives_a_starved_control_loop():
    controller = MotionController()
    pose = Pose2D(0.0, 0.0, 0.0)
    controller.start(Action.forward(75), pose, 0.0)
    controller.heartbeat(0.4)
    output = controller.update(pose, 0.4, 0.4)  # first tick arrives 0.4 s late
    assert output.vx == pytest.approx(LIMITS.max_linear_accel * 0.1)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_an_update_right_after_start_moves_within_one_periods_acceleration(rate_hz):
    """A caller that updates at once when an action arrives gets a moving twist without waiting a
    control period; the profile after it keeps every step within the acceleration limit."""
    dt = 1.0 / rate_hz
    for action, accel, component in [
        (Action.forward(75), LIMITS.max_linear_accel, "vx"),
        (Action.right(45), LIMITS.max_angular_accel, "wz"),
    ]:
        waits = MotionController()  # no period given: the first update at start is a zero twist
        waits.start(action, Pose2D(0.0, 0.0, 0.0), 0.0)
        assert getattr(waits.update(Pose2D(0.0, 0.0, 0.0), 0.0, 0.0), component) == 0.0
        controller, robot = MotionController(control_period_s=dt), Unicycle()
        controller.start(action, robot.pose, 0.0)
        first = controller.update(robot.pose, 0.0, 0.0)
        assert abs(getattr(first, component)) == pytest.approx(accel * dt)
        speeds = [0.0, abs(getattr(first, component))]
        robot.step(first.vx, first.wz, dt)
        for tick in range(1, rate_hz):
            now = tick * dt
            controller.heartbeat(now)
            output = controller.update(robot.pose, now, now)
            speeds.append(abs(getattr(output, component)))
            robot.step(output.vx, output.wz, dt)
        assert all(b - a <= accel * dt + 1e-12 for a, b in itertools.pairwise(speeds))


def test_control_period_must_be_finite_and_not_negative():
    for value in (-0.05, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="control_period_s"):
            MotionController(control_period_s=value)


def test_idle_controller_commands_zero():
    output = MotionController().update(None, None, 0.0)
    assert (output.vx, output.wz, output.state) == (0.0, 0.0, ControllerState.IDLE)


@pytest.mark.parametrize(
    "field", ["max_linear_speed", "max_angular_accel", "odom_timeout_s", "angle_tolerance"]
)
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_limits_must_be_finite_and_positive(field, value):
    with pytest.raises(ValueError, match=field):
        ControllerLimits(**{field: value})


def test_timeout_factor_below_one_is_rejected():
    with pytest.raises(ValueError, match="timeout_factor"):
        ControllerLimits(timeout_factor=0.5)
