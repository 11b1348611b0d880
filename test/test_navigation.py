"""The navigator's state machine with a scripted policy: plain Python, no ROS, no model."""

import math

import numpy as np
import pytest

from nvila_nav.actions import Action, parse_action
from nvila_nav.history import FrameHistory
from nvila_nav.navigation import (
    END_AGENT_STOPPED,
    END_CAMERA_TIMEOUT,
    END_CONTROLLER_FAILURES,
    END_NO_USABLE_ACTION,
    END_REASONS,
    END_STOP_REQUESTED,
    Command,
    Level,
    NavigationConfig,
    Navigator,
    NavState,
    is_stop_instruction,
    relative_goal,
)
from nvila_nav.policies import PolicyDecision, PolicyUnavailable

FORWARD = "move forward 75 cm"
LEFT = "turn left 30 degrees"


def frame(value: int = 0) -> np.ndarray:
    return np.full((4, 6, 3), value, dtype=np.uint8)


class ScriptedPolicy:
    """Answers from a script; an Exception in the script is raised instead."""

    name = "scripted"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests = []
        self.resets = 0

    def reset(self):
        self.resets += 1

    def decide(self, request):
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        timings = {"vision_ms": 2.0, "vit_passes": 1, "cached_frames": 7}
        return PolicyDecision(f"The next action is {answer}.", parse_action(answer), 0.02, timings)

    def close(self):
        pass


class Worker:
    """Drives the navigator the way the node's worker thread does, one poll at a time."""

    def __init__(self, navigator, policy):
        self.navigator = navigator
        self.policy = policy

    def step(self, now: float) -> list[str]:
        poll = self.navigator.poll(now)
        published = [command.text for command in poll.commands]
        if poll.reset_policy:
            self.policy.reset()
        if poll.query is not None:
            try:
                outcome = self.policy.decide(poll.query.request)
            except Exception as error:
                outcome = error
            published += [c.text for c in self.navigator.complete(poll.query, outcome, now)]
        return published


def make(*answers, **config):
    config.setdefault("camera_loss_timeout_s", 0.0)  # these tests offer frames only now and then
    navigator = Navigator(FrameHistory(keep_rate_hz=2.0, capacity=16), NavigationConfig(**config))
    return navigator, Worker(navigator, ScriptedPolicy(*answers))


def texts(commands: list[Command]) -> list[str]:
    return [command.text for command in commands]


def start(navigator, worker, instruction="go to the kitchen", now=0.0) -> list[str]:
    navigator.offer_frame(frame(1), now)
    assert navigator.instruct(instruction, now) == []
    return worker.step(now)


def test_instruction_queries_executes_and_queries_again_until_stop():
    navigator, worker = make(FORWARD, LEFT, "stop")
    assert navigator.state is NavState.IDLE
    assert worker.step(0.0) == []  # nothing to do without an instruction
    assert start(navigator, worker) == [FORWARD]
    assert navigator.state is NavState.EXECUTING
    request = worker.policy.requests[0]
    assert request.instruction == "go to the kitchen"
    # Short history: 7 black pads (no key), then the current frame under its history key.
    assert len(request.frames) == 8 and request.frame_keys[:7] == [None] * 7
    assert request.frame_keys[7] is not None and request.frames[7][0, 0, 0] == 1
    assert all(f.shape == (4, 6, 3) and not f.any() for f in request.frames[:7])
    assert worker.step(0.1) == []  # waiting for the controller, no new query

    assert navigator.on_result(f"succeeded {FORWARD}", 0.5) == []
    assert navigator.state is NavState.QUERYING
    navigator.offer_frame(frame(2), 0.5)
    assert worker.step(0.5) == [LEFT]
    assert navigator.on_result(f"succeeded {LEFT}", 1.0) == []
    navigator.offer_frame(frame(3), 1.0)
    assert worker.step(1.0) == ["stop"]
    assert navigator.state is NavState.STOPPED
    assert navigator.on_result("succeeded stop", 1.1) == []
    assert worker.step(1.2) == []
    status = navigator.status(1.2)
    assert status.queries == 3 and status.last_action == "stop"
    assert status.cache_hit_rate == pytest.approx(7 / 8)
    assert status.values()["last_latency_ms"] == "20.0"


def test_commands_carry_goal_and_marker_content():
    def command(action):
        return Command(action, "go", "policy", 3.0)

    forward, left, right, stop = (
        command(Action.forward(50)),
        command(Action.left(30)),
        command(Action.right(45)),
        command(Action.stop()),
    )
    assert forward.goal == (0.5, 0.0, 0.0) and forward.arrow == (0.5, 0.0)
    assert left.goal == pytest.approx((0.0, 0.0, math.radians(30)))
    assert right.goal[2] == pytest.approx(-math.radians(45))
    assert left.arrow == pytest.approx((0.5 * math.cos(math.radians(30)), 0.25))
    assert stop.goal == (0.0, 0.0, 0.0) and stop.arrow is None
    assert forward.label == "go\n→ move forward 50 cm"
    assert relative_goal(Action.forward(25)) == (0.25, 0.0, 0.0)


def test_new_instruction_preempts_with_stop_and_fresh_history():
    navigator, worker = make(FORWARD, FORWARD)
    for i in range(4):  # 2 s of frames: a history of 4 kept frames
        navigator.offer_frame(frame(i), i * 0.5)
    navigator.instruct("go to the kitchen", 1.5)
    assert worker.step(1.5) == [FORWARD]
    assert worker.policy.resets == 1
    navigator.offer_frame(frame(9), 2.0)
    assert len(navigator.history) == 2

    # The robot is moving on the old instruction: stop first, then plan afresh.
    assert texts(navigator.instruct("go back to the sofa", 2.1)) == ["stop"]
    assert navigator.state is NavState.QUERYING and navigator.instruction == "go back to the sofa"
    assert len(navigator.history) == 1  # starts with the current view only
    assert worker.step(2.1) == [FORWARD]
    assert worker.policy.resets == 2  # policy reset (feature cache, plan) before the query
    request = worker.policy.requests[1]
    assert request.instruction == "go back to the sofa"
    assert request.frames[-1][0, 0, 0] == 9 and request.frame_keys[:7] == [None] * 7

    # The controller answers the preempted action and the stop first; they are not ours.
    assert navigator.on_result(f"cancelled {FORWARD}", 2.2) == []
    assert navigator.on_result("succeeded stop", 2.2) == []
    assert navigator.state is NavState.EXECUTING
    assert navigator.on_result(f"succeeded {FORWARD}", 3.0) == []
    assert navigator.state is NavState.QUERYING


def test_new_instruction_while_idle_or_stopped_publishes_nothing():
    navigator, worker = make("stop", LEFT)
    assert start(navigator, worker) == ["stop"]
    assert navigator.state is NavState.STOPPED
    assert navigator.instruct("turn around", 0.2) == []
    assert worker.step(0.2) == [LEFT]
    assert navigator.instruct("   ", 0.3) == []  # empty instructions are ignored
    assert navigator.instruction == "turn around"


@pytest.mark.parametrize("text", ["stop", "Stop!", " HALT. "])
def test_stop_instruction_ends_the_current_one(text):
    navigator, worker = make(FORWARD)
    assert start(navigator, worker) == [FORWARD]
    assert texts(navigator.instruct(text, 0.2)) == ["stop"]
    assert navigator.state is NavState.STOPPED
    assert worker.step(0.3) == []


def test_stop_instruction_detection():
    assert is_stop_instruction("stop") and is_stop_instruction("Halt!")
    assert not is_stop_instruction("stop at the red door")


def test_answer_of_an_ended_instruction_is_dropped():
    navigator, _ = make()
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    query = navigator.poll(0.0).query
    assert query is not None
    # The stop service ends the instruction while the model is thinking.
    assert texts(navigator.stop("navigator/stop service", 0.1)) == ["stop"]
    decision = PolicyDecision("move forward 75 cm", Action.forward(75), 0.1)
    assert navigator.complete(query, decision, 0.2) == []
    assert navigator.state is NavState.STOPPED


@pytest.mark.parametrize(
    ("max_reparse", "answers", "expected"),
    [
        (1, ["I see a sofa", "lovely weather"], [[], ["stop"]]),
        (1, ["I see a sofa", LEFT], [[], [LEFT]]),
        (0, ["I see a sofa"], [["stop"]]),
        (2, ["?", PolicyUnavailable("no odometry"), "!"], [[], [], ["stop"]]),
    ],
)
def test_unparseable_output_is_requeried_then_stops(max_reparse, answers, expected):
    navigator, worker = make(*answers, max_reparse=max_reparse)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    published = [worker.step(0.01 * i) for i in range(len(expected))]
    assert published == expected
    if expected[-1] == ["stop"]:
        assert navigator.state is NavState.STOPPED
        status = navigator.status(1.0)
        assert status.level is Level.ERROR and "no usable action" in status.message
        assert status.last_action == "stop"
    else:
        assert navigator.state is NavState.EXECUTING


def test_policy_error_is_reported():
    navigator, worker = make(PolicyUnavailable("needs odometry"), max_reparse=0)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    assert worker.step(0.0) == ["stop"]
    assert "needs odometry" in navigator.status(0.0).message


def test_controller_failures_requery_until_the_limit():
    navigator, worker = make(FORWARD, FORWARD, LEFT, LEFT, LEFT, max_controller_failures=3)
    assert start(navigator, worker) == [FORWARD]
    assert navigator.on_result(f"timed_out {FORWARD}", 1.0) == []
    assert navigator.state is NavState.QUERYING
    assert navigator.status(1.0).level is Level.WARN
    navigator.offer_frame(frame(), 1.0)
    assert worker.step(1.0) == [FORWARD]
    assert navigator.on_result(f"succeeded {FORWARD}", 2.0) == []  # resets the count
    navigator.offer_frame(frame(), 2.0)
    assert worker.step(2.0) == [LEFT]
    assert navigator.on_result(f"watchdog {LEFT}", 3.0) == []
    navigator.offer_frame(frame(), 3.0)
    assert worker.step(3.0) == [LEFT]
    assert navigator.on_result(f"rejected {LEFT}", 3.5) == []
    navigator.offer_frame(frame(), 3.5)
    assert worker.step(3.5) == [LEFT]
    assert texts(navigator.on_result(f"cancelled {LEFT}", 4.0)) == ["stop"]
    assert navigator.state is NavState.STOPPED
    status = navigator.status(4.0)
    assert status.level is Level.ERROR and "3 controller failures" in status.message


def test_missing_result_counts_as_a_failure():
    navigator, worker = make(FORWARD, LEFT, result_timeout_s=5.0, max_frame_age_s=10.0)
    assert start(navigator, worker) == [FORWARD]
    assert worker.step(4.9) == []
    assert worker.step(5.1) == [LEFT]  # re-queried after the timeout
    assert navigator.status(5.1).failures == 1
    # The late answer to the first action is not mistaken for the second one's.
    assert navigator.on_result(f"succeeded {FORWARD}", 5.2) == []
    assert navigator.state is NavState.EXECUTING


def test_results_for_other_senders_and_mismatched_text_are_ignored():
    navigator, worker = make(FORWARD)
    assert navigator.on_result("succeeded turn left 15 degrees", 0.0) == []  # teleop's
    assert start(navigator, worker) == [FORWARD]
    assert navigator.on_result("succeeded turn left 15 degrees", 0.5) == []
    assert navigator.state is NavState.EXECUTING


def test_estop_pauses_and_release_does_not_restart():
    """Reset is not restart: the interrupted instruction waits for an explicit resume."""
    navigator, worker = make(FORWARD, LEFT, LEFT)
    assert start(navigator, worker) == [FORWARD]
    assert navigator.set_estop(True, 0.2) is True
    assert navigator.set_estop(True, 0.25) is False
    assert navigator.state is NavState.PAUSED
    # The controller aborted the action because of the e-stop: not a failure.
    assert navigator.on_result(f"estopped {FORWARD}", 0.3) == []
    navigator.offer_frame(frame(), 0.5)
    assert worker.step(0.5) == []
    assert worker.step(10.0) == []  # no frame timeout while paused either
    status = navigator.status(10.0)
    assert status.estop and status.failures == 0 and "e-stop" in status.message
    assert navigator.resume(10.0) is False  # not while the e-stop is engaged
    navigator.set_estop(False, 10.0)
    navigator.offer_frame(frame(), 10.0)
    assert worker.step(10.0) == [] and worker.step(60.0) == []  # released: still paused
    status = navigator.status(60.0)
    assert status.state is NavState.PAUSED and "resume" in status.message
    assert status.instruction == "go to the kitchen"
    navigator.offer_frame(frame(), 61.0)
    assert navigator.resume(61.0) is True
    assert worker.step(61.0) == [LEFT]


def test_controller_ready_after_its_resume_continues_the_paused_instruction():
    navigator, worker = make(FORWARD, LEFT)
    assert navigator.set_controller_state("ready", 0.0) is False
    assert start(navigator, worker) == [FORWARD]
    assert navigator.set_controller_state("estopped", 0.1) is False
    assert navigator.state is NavState.PAUSED  # paused by the controller's word alone
    assert navigator.set_controller_state("awaiting_resume", 0.2) is False
    navigator.offer_frame(frame(), 0.3)
    assert worker.step(0.3) == []
    assert navigator.set_controller_state("ready", 0.4) is True
    navigator.offer_frame(frame(), 0.5)
    assert worker.step(0.5) == [LEFT]


def test_no_query_while_the_controller_is_not_ready():
    """A new instruction while the controller awaits its resume is held (its actions would be
    refused), and starts once the controller is ready."""
    navigator, worker = make(FORWARD)
    navigator.set_controller_state("awaiting_resume", 0.0)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    assert worker.step(0.0) == [] and worker.step(20.0) == []  # no camera timeout either
    assert "motion controller" in navigator.status(20.0).message
    navigator.set_controller_state("ready", 20.1)
    navigator.offer_frame(frame(), 20.1)
    assert worker.step(20.1) == [FORWARD]


def test_new_instruction_resumes_a_paused_navigator():
    navigator, worker = make(FORWARD, LEFT)
    assert start(navigator, worker) == [FORWARD]
    navigator.set_estop(True, 0.1)
    navigator.set_estop(False, 0.2)
    navigator.offer_frame(frame(), 0.3)
    assert navigator.instruct("go to the sofa", 0.3) == []  # nothing runs: nothing to stop
    assert worker.step(0.3) == [LEFT]


def test_instruction_given_during_the_estop_starts_after_release():
    navigator, worker = make(FORWARD)
    navigator.set_estop(True, 0.0)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    assert worker.step(0.0) == []
    navigator.set_estop(False, 0.5)
    navigator.offer_frame(frame(), 0.5)
    assert worker.step(0.5) == [FORWARD]


def test_decision_arriving_during_estop_is_discarded():
    navigator, worker = make(LEFT, FORWARD)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    poll = navigator.poll(0.0)
    navigator.set_estop(True, 0.05)
    decision = worker.policy.decide(poll.query.request)
    assert navigator.complete(poll.query, decision, 0.1) == []
    navigator.set_estop(False, 0.2)
    navigator.offer_frame(frame(), 0.5)
    assert worker.step(0.5) == []
    assert navigator.resume(0.5)
    assert worker.step(0.5) == [FORWARD]  # asked again on fresh frames


def test_camera_loss_while_moving_stops_at_once_and_waits_for_frames():
    navigator, worker = make(FORWARD, LEFT, camera_loss_timeout_s=0.3, frame_timeout_s=3.0)
    assert start(navigator, worker) == [FORWARD]
    navigator.offer_frame(frame(), 0.2)
    assert worker.step(0.45) == []  # 0.25 s since the last frame
    assert worker.step(0.55) == ["stop"]  # 0.35 s: stopped
    status = navigator.status(0.55)
    assert status.state is NavState.QUERYING and "camera was lost" in status.message
    # the results of the interrupted action and of the stop are consumed silently
    assert navigator.on_result(f"cancelled {FORWARD}", 0.6) == []
    assert navigator.on_result("succeeded stop", 0.6) == []
    navigator.offer_frame(frame(), 1.0)  # the camera is back within frame_timeout_s
    assert worker.step(1.0) == [LEFT]


def test_camera_gone_for_good_ends_naming_the_dropped_frames():
    navigator, worker = make(FORWARD, camera_loss_timeout_s=0.3, frame_timeout_s=2.0)
    assert start(navigator, worker) == [FORWARD]
    navigator.drop_frame("unsupported encoding 'yuv422'; supported: rgb8")
    assert worker.step(0.5) == ["stop"]
    assert worker.step(3.0) == ["stop"]
    status = navigator.status(3.0)
    assert status.state is NavState.STOPPED and status.level is Level.ERROR
    assert "unsupported encoding 'yuv422'" in status.message
    assert "camera down" not in status.message


def test_unexpected_estop_result_counts_as_a_failure():
    navigator, worker = make(FORWARD, max_controller_failures=1)
    assert start(navigator, worker) == [FORWARD]
    assert texts(navigator.on_result(f"estopped {FORWARD}", 0.3)) == ["stop"]


def test_stale_frames_wait_then_stop():
    navigator, worker = make(FORWARD, max_frame_age_s=1.0, frame_timeout_s=3.0)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 2.0)  # the newest frame is 2 s old
    assert worker.step(2.0) == []
    assert navigator.state is NavState.QUERYING
    status = navigator.status(2.0)
    assert status.level is Level.WARN and "fresh frame" in status.message
    assert worker.step(4.9) == []
    navigator.offer_frame(frame(5), 4.95)
    assert worker.step(5.0) == [FORWARD]  # a fresh frame within frame_timeout_s: go
    assert worker.policy.requests[0].frames[-1][0, 0, 0] == 5

    navigator, worker = make(FORWARD, max_frame_age_s=1.0, frame_timeout_s=3.0)
    navigator.instruct("go", 0.0)  # no camera at all
    assert worker.step(2.9) == []
    assert worker.step(3.1) == ["stop"]
    status = navigator.status(3.1)
    assert status.state is NavState.STOPPED and status.level is Level.ERROR
    assert "no camera frame" in status.message
    assert worker.policy.requests == []


def test_reset_forgets_instruction_and_history_and_stops_motion():
    navigator, worker = make(FORWARD)
    assert start(navigator, worker) == [FORWARD]
    assert texts(navigator.reset(0.5)) == ["stop"]
    assert navigator.state is NavState.IDLE and navigator.instruction == ""
    assert len(navigator.history) == 0 and navigator.history.latest is None
    assert navigator.poll(0.6).reset_policy
    assert navigator.status(0.6).queries == 0
    assert navigator.reset(0.7) == []  # nothing moving: nothing to publish


def test_clock_jump_back_restarts_the_history():
    navigator, _ = make()
    for i in range(4):
        assert navigator.offer_frame(frame(i), 100.0 + i) is False
    assert navigator.offer_frame(frame(), 102.5) is False  # out of order: ignored
    assert len(navigator.history) == 4
    assert navigator.offer_frame(frame(), 0.5) is True  # the simulator restarted
    assert len(navigator.history) == 1


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_reparse"):
        NavigationConfig(max_reparse=-1)
    with pytest.raises(ValueError, match="frame_timeout_s"):
        NavigationConfig(frame_timeout_s=0.0)
    with pytest.raises(ValueError, match="max_controller_failures"):
        NavigationConfig(max_controller_failures=0)


def step_commands(worker: Worker, now: float) -> list[Command]:
    """Worker.step, returning the commands themselves (with their end reasons)."""
    navigator = worker.navigator
    poll = navigator.poll(now)
    commands = list(poll.commands)
    if poll.query is not None:
        try:
            outcome = worker.policy.decide(poll.query.request)
        except Exception as error:
            outcome = error
        commands += navigator.complete(poll.query, outcome, now)
    return commands


def test_blocked_forward_is_an_executed_no_op_not_a_failure():
    """VLN-CE semantics: a forward move into a wall ends "blocked" and the agent is asked again;
    no number of blocked moves in a row ends the instruction."""
    navigator, worker = make(*[FORWARD] * 5, "stop", max_controller_failures=2)
    assert start(navigator, worker) == [FORWARD]
    for i in range(4):
        assert navigator.on_result(f"blocked {FORWARD}", 1.0 + i) == []
        assert navigator.state is NavState.QUERYING
        assert "blocked" in navigator.status(1.0 + i).message
        assert navigator.status(1.0 + i).failures == 0
        navigator.offer_frame(frame(), 1.0 + i)
        assert worker.step(1.0 + i) == [FORWARD]
    # a failure after blocked moves starts counting from zero
    assert navigator.on_result(f"timed_out {FORWARD}", 6.0) == []
    assert navigator.status(6.0).failures == 1
    navigator.offer_frame(frame(), 6.0)
    (stop,) = step_commands(worker, 6.0)
    assert stop.text == "stop" and stop.end == END_AGENT_STOPPED


def test_every_end_of_an_instruction_says_why():
    # the policy's own stop
    navigator, worker = make("stop")
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    (command,) = step_commands(worker, 0.0)
    assert (command.text, command.end) == ("stop", END_AGENT_STOPPED)
    # controller failures
    navigator, worker = make(FORWARD, FORWARD, max_controller_failures=2)
    assert start(navigator, worker) == [FORWARD]
    navigator.on_result(f"timed_out {FORWARD}", 1.0)
    navigator.offer_frame(frame(), 1.0)
    (forward,) = step_commands(worker, 1.0)
    assert forward.end == ""  # an ordinary action carries no end
    (command,) = navigator.on_result(f"timed_out {FORWARD}", 2.0)
    assert (command.text, command.end) == ("stop", END_CONTROLLER_FAILURES)
    # no result at all counts as a controller failure too
    navigator, worker = make(FORWARD, max_controller_failures=1, result_timeout_s=1.0)
    assert start(navigator, worker) == [FORWARD]
    (command,) = navigator.poll(2.0).commands
    assert command.end == END_CONTROLLER_FAILURES
    # unusable output
    navigator, worker = make("I see a sofa", max_reparse=0)
    navigator.offer_frame(frame(), 0.0)
    navigator.instruct("go", 0.0)
    (command,) = step_commands(worker, 0.0)
    assert command.end == END_NO_USABLE_ACTION
    # no camera
    navigator, worker = make(FORWARD, frame_timeout_s=1.0)
    navigator.instruct("go", 0.0)
    (command,) = navigator.poll(1.5).commands
    assert command.end == END_CAMERA_TIMEOUT
    # a stop instruction or the stop service; preemption and reset end nothing
    navigator, worker = make(FORWARD, FORWARD)
    assert start(navigator, worker) == [FORWARD]
    (preempt,) = navigator.instruct("go elsewhere", 1.0)
    assert (preempt.text, preempt.end) == ("stop", "")
    assert [c.end for c in navigator.instruct("halt!", 2.0)] == [END_STOP_REQUESTED]
    assert [c.end for c in navigator.stop("service", 3.0)] == [END_STOP_REQUESTED]
    with pytest.raises(ValueError, match="unknown end reason"):
        navigator.stop("why", 4.0, end="bored")
    assert set(END_REASONS) == {
        END_AGENT_STOPPED,
        END_CONTROLLER_FAILURES,
        END_NO_USABLE_ACTION,
        END_CAMERA_TIMEOUT,
        END_STOP_REQUESTED,
    }


def test_recent_history_queries_show_decision_frames_and_executed_actions():
    """With a DecisionHistory the navigator asks with the first decision's view, the views of the
    latest executed decisions and the current view, plus the actions the controller finished."""
    from nvila_nav.history import DecisionHistory

    history = FrameHistory(keep_rate_hz=2.0, capacity=64, num_frames=4)
    navigator = Navigator(history, decisions=DecisionHistory(num_frames=4))
    policy = ScriptedPolicy(FORWARD, LEFT, FORWARD)
    worker = Worker(navigator, policy)
    navigator.offer_frame(frame(1), 0.0)
    navigator.instruct("walk to the sofa", 0.0)
    assert worker.step(0.0) == [FORWARD]
    first = policy.requests[0]
    assert [int(f[0, 0, 0]) for f in first.frames] == [1, 0, 0, 1]  # black pads the middle
    assert first.previous_actions == ()
    navigator.offer_frame(frame(2), 1.5)
    navigator.on_result(f"succeeded {FORWARD}", 1.5)
    assert worker.step(1.5) == [LEFT]
    second = policy.requests[1]
    assert [int(f[0, 0, 0]) for f in second.frames] == [1, 0, 0, 2]
    assert second.previous_actions == (FORWARD,)
    navigator.offer_frame(frame(3), 2.5)
    navigator.on_result(f"blocked {LEFT}", 2.5)  # a blocked move was still executed (a no-op)
    assert worker.step(2.5) == [FORWARD]
    third = policy.requests[2]
    assert [int(f[0, 0, 0]) for f in third.frames] == [1, 0, 2, 3]
    assert third.previous_actions == (FORWARD, LEFT)
    navigator.instruct("go back", 3.0)  # a new instruction starts both histories over
    navigator.offer_frame(frame(4), 3.1)
    assert navigator.poll(3.1).query.request.previous_actions == ()


def test_decision_history_keeps_the_first_and_the_latest_decisions():
    from nvila_nav.history import DecisionHistory

    decisions = DecisionHistory(num_frames=4)
    assert decisions.sample("now", 9) == (["now", None, None, "now"], [9, None, None, 9])
    for k, name in enumerate("abcde"):
        decisions.record(name, k)
    assert len(decisions) == 5
    assert decisions.sample("f", 5) == (["a", "d", "e", "f"], [0, 3, 4, 5])
    decisions.reset()
    assert len(decisions) == 0
    with pytest.raises(ValueError):
        DecisionHistory(num_frames=1)
