"""evaluator node: runs R2R-format episodes through the live graph and scores them like VLN-CE.

For every episode a worker thread (never a callback) sets the sim's `episode_id` through
`<sim_node>/set_parameters`, calls `sim/load_episode` and `<navigator_node>/reset`, waits for the
episode on `sim/episode` and for `settle_time_s` of odometry, then publishes the instruction. It
records `odom` and `action` until the agent says "stop" or a limit is hit (then it calls
`<navigator_node>/stop`), scores the run with nvila_nav/evaluation.py and writes
`output_dir/episodes/<id>.json` and `output_dir/plots/<id>.png`; at the end `summary.json` and
`summary.txt`. Behaviour decisions:

- Times are odometry stamps: sim time in simulation, so `max_episode_time_s` counts sim seconds.
  The simulator holds its clock while the navigator's policy decides (`navigator/querying`), so
  the limit measures the robot, not the CPU. The episode clock starts when the instruction goes
  out.
- Every episode records how it ended (`end_reason`, nvila_nav/evaluation.py): the navigator
  reports why it ended an instruction on `navigator/outcome`; a "stop" it made after controller
  failures (or unusable output, a frozen camera) is not the agent's stop and cannot succeed.
  When a navigator publishes no outcomes, every "stop" is the agent's. If the outcome of a
  "stop" does not follow within a few seconds, the stop counts as the agent's (logged).
- `action_result` "blocked" moves (executed no-ops) are counted per episode.
- Odometry stamped before the episode's load (`start_time` in `sim/episode`) is ignored, and so
  is a latched `sim/episode` from an earlier load.
- A failed or silent service, or odometry silent for `odom_timeout_s` of wall time, aborts the
  whole run: results with a broken graph or a policy that kept its history would mislead.
  Silence counts from the start of each wait (a scene load can take many seconds on a loaded
  machine, and the simulator publishes nothing meanwhile) and not while the navigator holds the
  simulator (`navigator/querying` true: the clock stands still while a slow model thinks).
- Progress goes out as JSON on the latched `evaluator/status`; in-process callers (bringup,
  tests) wait on `finished` and read `results`, `summary` and `error`.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.client import Client
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.evaluation import (
    END_AGENT_STOPPED,
    END_REASONS,
    EpisodeRecorder,
    evaluate_episode,
    plot_episode,
    select_episodes,
    summary_table,
    write_episode_result,
    write_summary,
)
from nvila_nav.nodes.callbacks import logged, quaternion_yaw
from nvila_nav.nodes.parameters import ParameterSpec, declare_all
from nvila_nav.nodes.process import ShutdownRequest, spin_in_background, stop_executor
from nvila_nav.sim.episodes import Episode, read_episodes

_RESTART = "Read at start-up."
_OUTCOME_WAIT_S = 5.0
"""Wall time to wait for the navigator's outcome after a "stop" on action."""

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "episodes_file",
        "",
        f"R2R-format episodes (.json or .json.gz); the sim must serve the same file. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "episode_ids",
        "",
        f"Episodes to run, comma or space separated, in this order; empty: all. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "max_episodes",
        0,
        f"Run at most this many of the selected episodes; 0: all. {_RESTART}",
        read_only=True,
        min_value=0,
    ),
    ParameterSpec(
        "max_actions",
        100,
        "Movement actions per episode, blocked ones included; the next one ends the episode "
        "as failed (action_limit). 100 is three times the longest expert route of the "
        f"embedded simulator's val_unseen set (VLN-CE: 500 steps of 25 cm); 0: no limit. {_RESTART}",
        read_only=True,
        min_value=0,
    ),
    ParameterSpec(
        "max_episode_time_s",
        300.0,
        "Odometry time (sim time) from the instruction after which the episode ends as failed "
        f"[s]; 0: no limit. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "output_dir",
        "outputs/evaluation",
        f"Where episodes/, plots/, summary.json and summary.txt are written. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "policy_label",
        "nvila",
        f"Name of the policy under test, written into every result. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "sim_node",
        "sim",
        f"Name of the simulator node whose episode_id parameter is set. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "navigator_node",
        "navigator",
        f"Name of the navigator node whose reset and stop services are called. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "settle_time_s",
        1.0,
        "Odometry time after a load before the instruction goes out, so fresh frames of the "
        f"start arrive first [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "startup_timeout_s",
        300.0,
        "Wall time to wait for the services, odometry and an instruction subscriber at start "
        f"(a navigator may load a large model first) [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "service_timeout_s",
        30.0,
        f"Wall time for each service call and for the sim/episode message [s]. {_RESTART}",
        read_only=True,
        min_value=0.1,
    ),
    ParameterSpec(
        "odom_timeout_s",
        30.0,
        "Wall time without odometry that aborts the run [s], counted from the start of each "
        "wait and not while the navigator holds the simulator (navigator/querying). Generous: "
        "on a loaded machine a starved executor delays callbacks by seconds, and a dead "
        f"simulator is still caught. {_RESTART}",
        read_only=True,
        min_value=0.1,
    ),
    ParameterSpec(
        "shutdown_when_done",
        False,
        f"End the process when all episodes are done (main exits 1 on error). {_RESTART}",
        read_only=True,
    ),
)


def check_episodes_file(path: str) -> None:
    """The evaluator needs an episodes file that exists; ValueError says how to give one."""
    if not path:
        raise ValueError(
            "parameter episodes_file is required: the R2R-format episodes to evaluate "
            "(ros2 launch nvila_nav sim_eval.launch.py episodes:=FILE, nvila-nav-bringup sim_eval "
            "--episodes FILE, or `nvila-sim episodes` to make one)"
        )
    if not Path(path).is_file():
        raise ValueError(f"episodes_file {path} does not exist")


class EvaluationError(RuntimeError):
    """The graph did not do its part (a service failed or went silent); the run stops."""


class _Stopping(Exception):
    """The node is being destroyed while the run is under way."""


class EvaluatorNode(Node):
    """Drives the sim and the navigator through a list of episodes and writes VLN-CE metrics."""

    def __init__(self, node_name: str = "evaluator", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        # First: destroy_node() must work on a node whose construction failed.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        params = declare_all(self, PARAMETERS)
        check_episodes_file(params["episodes_file"])
        self._episodes = select_episodes(
            read_episodes(params["episodes_file"]), params["episode_ids"], params["max_episodes"]
        )
        if not self._episodes:
            raise ValueError(f"episodes_file {params['episodes_file']} holds no episodes")
        self._params = params
        self._output_dir = Path(params["output_dir"])
        self.shutdown_when_done: bool = params["shutdown_when_done"]

        self.finished = threading.Event()
        self.results: list[dict] = []
        self.summary: dict | None = None
        self.error: str | None = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._odom: tuple[float, float, float, float] | None = None
        self._odom_wall = 0.0
        self._held = False
        self._released_wall = 0.0
        self._sim_episode: dict | None = None
        self._recorder: EpisodeRecorder | None = None
        self._instruction = ""

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        sim, navigator = params["sim_node"], params["navigator_node"]
        self._set_parameters = self.create_client(SetParameters, f"{sim}/set_parameters")
        self._load = self.create_client(Trigger, "sim/load_episode")
        self._navigator_reset = self.create_client(Trigger, f"{navigator}/reset")
        self._navigator_stop = self.create_client(Trigger, f"{navigator}/stop")
        self._instruction_pub = self.create_publisher(String, "instruction", reliable)
        self._status_pub = self.create_publisher(String, "evaluator/status", latched)
        self.create_subscription(Odometry, "odom", self._on_odom, reliable)
        self.create_subscription(String, "action", self._on_action, reliable)
        self.create_subscription(String, "sim/episode", self._on_sim_episode, latched)
        self.create_subscription(String, "action_result", self._on_action_result, reliable)
        self._outcome_sub = self.create_subscription(
            String, "navigator/outcome", self._on_outcome, reliable
        )
        self.create_subscription(Bool, "navigator/querying", self._on_querying, latched)

        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"evaluating {len(self._episodes)} episodes of {params['episodes_file']} as "
            f"{params['policy_label']!r} into {self._output_dir}"
        )

    def halt(self) -> None:
        """Interrupt the run (a shutdown): the episode in progress is dropped, not scored, even
        when the stop that ends the graph reaches this node first."""
        self._stopping.set()
        if self._thread is not None:  # None: construction failed before the run started
            with self._lock:
                self._changed.notify_all()

    def destroy_node(self) -> None:
        """Interrupt the run (its partial episode is dropped) before the endpoints go away."""
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        super().destroy_node()

    # --- subscriptions --------------------------------------------------------------------

    @logged
    def _on_odom(self, msg: Odometry) -> None:
        stamp = msg.header.stamp
        t = stamp.sec + stamp.nanosec * 1e-9
        position = msg.pose.pose.position
        pose = (t, position.x, position.y, quaternion_yaw(msg.pose.pose.orientation))
        if not all(math.isfinite(v) for v in pose):
            self.get_logger().warning("dropped odometry with non-finite values")
            return
        with self._lock:
            self._odom = pose
            self._odom_wall = time.monotonic()
            if self._recorder is not None:
                self._recorder.add_pose(*pose)
            self._changed.notify_all()

    @logged
    def _on_action(self, msg: String) -> None:
        with self._lock:
            if self._recorder is not None and self._odom is not None:
                self._recorder.add_action(self._odom[0], msg.data)
                self._changed.notify_all()

    @logged
    def _on_action_result(self, msg: String) -> None:
        with self._lock:
            if self._recorder is not None:
                self._recorder.add_result(msg.data)

    @logged
    def _on_outcome(self, msg: String) -> None:
        outcome = json.loads(msg.data)
        end = outcome.get("end")
        if end not in END_REASONS:
            raise ValueError(f"navigator/outcome with an unknown end {end!r}")
        with self._lock:
            recorder = self._recorder
            if recorder is None or str(outcome.get("instruction", "")) != self._instruction:
                return  # the end of another (earlier) instruction
            recorder.add_outcome(self._odom[0], end)
            self._changed.notify_all()

    @logged
    def _on_querying(self, msg: Bool) -> None:
        with self._lock:
            if self._held and not msg.data:
                self._released_wall = time.monotonic()
            self._held = bool(msg.data)
            self._changed.notify_all()

    @logged
    def _on_sim_episode(self, msg: String) -> None:
        data = json.loads(msg.data)
        with self._lock:
            self._sim_episode = data
            self._changed.notify_all()

    # --- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        total = len(self._episodes)
        try:
            self._wait_for_graph()
            for index, episode in enumerate(self._episodes):
                self._publish_status("running", episode.episode_id)
                result = self._run_episode(episode)
                self._check_stopping()  # ended by a shutdown's stop: not a result
                write_episode_result(result, self._output_dir)
                try:
                    plot_episode(episode, result, self._output_dir)
                except Exception:  # a missing picture must not cost the measurements
                    self.get_logger().warning(
                        f"no plot for {episode.episode_id}:\n{traceback.format_exc()}"
                    )
                self.results.append(result)
                metrics = result["metrics"]
                self.get_logger().info(
                    f"episode {episode.episode_id} ({index + 1}/{total}): "
                    f"{'success' if metrics['success'] else 'failure'} ({result['end_reason']}), "
                    f"NE {metrics['ne']:.2f} m, SPL {metrics['spl']:.2f}, "
                    f"{metrics['steps']} actions, {result['elapsed_s']:.1f} s"
                )
            self.summary = write_summary(self.results, self._output_dir, self._label)
            self.get_logger().info(
                f"evaluation done, results in {self._output_dir}:\n{summary_table(self.summary)}"
            )
            self._publish_status("done")
        except _Stopping:
            self.error = "interrupted"
        except Exception as exc:
            self.error = str(exc) if isinstance(exc, EvaluationError) else traceback.format_exc()
            self.get_logger().error(f"evaluation aborted: {self.error}")
            self._publish_status("error")
        finally:
            self.finished.set()

    @property
    def _label(self) -> str:
        return self._params["policy_label"]

    def _publish_status(self, state: str, episode_id: str = "") -> None:
        status: dict[str, Any] = {
            "state": state,
            "policy": self._label,
            "completed": len(self.results),
            "total": len(self._episodes),
            "episode_id": episode_id,
            "output_dir": str(self._output_dir),
        }
        if self.results:
            last = self.results[-1]
            status["last"] = {
                "episode_id": last["episode_id"],
                "success": last["metrics"]["success"],
                "spl": last["metrics"]["spl"],
                "ne": last["metrics"]["ne"],
                "end_reason": last["end_reason"],
            }
        if self.summary is not None:
            status["summary"] = self.summary["metrics"]
        if self.error is not None:
            status["error"] = self.error
        if self.context.ok():
            self._status_pub.publish(String(data=json.dumps(status)))

    def _check_stopping(self) -> None:
        if self._stopping.is_set() or not self.context.ok():
            raise _Stopping

    def _wait_for_graph(self) -> None:
        """Block until the services, odometry and a navigator listening for instructions exist."""
        deadline = time.monotonic() + self._params["startup_timeout_s"]
        needs: list[tuple[str, Callable[[], bool]]] = [
            (client.srv_name, client.service_is_ready)
            for client in (
                self._set_parameters,
                self._load,
                self._navigator_reset,
                self._navigator_stop,
            )
        ]
        needs.append(("odometry on odom", lambda: self._odom is not None))
        needs.append(
            (
                "subscriber on instruction",
                lambda: self._instruction_pub.get_subscription_count() > 0,
            )
        )
        for what, ready in needs:
            while not ready():
                self._check_stopping()
                if time.monotonic() > deadline:
                    raise EvaluationError(
                        f"no {what} within startup_timeout_s={self._params['startup_timeout_s']:g} s"
                    )
                time.sleep(0.05)

    def _call(self, client: Client, request: Any) -> Any:
        """Call a service from the worker thread; the executor spinning this node answers."""
        timeout = self._params["service_timeout_s"]
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _future: done.set())
        deadline = time.monotonic() + timeout
        while not done.wait(0.05):
            self._check_stopping()
            if time.monotonic() > deadline:
                client.remove_pending_request(future)
                raise EvaluationError(f"{client.srv_name}: no response within {timeout:g} s")
        return future.result()

    def _trigger(self, client: Client) -> None:
        response = self._call(client, Trigger.Request())
        if not response.success:
            raise EvaluationError(f"{client.srv_name} failed: {response.message}")

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float | None = None):
        """Wait until `predicate()` (called under the lock); returns its value.

        Fails after `timeout` s of wall time, or when odometry has been silent for odom_timeout_s
        since this wait began while the simulator was not held by the navigator.
        """
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        silence = self._params["odom_timeout_s"]
        with self._changed:
            while not (value := predicate()):
                self._check_stopping()
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise EvaluationError(f"no {what} within {timeout:g} s")
                quiet_since = max(self._odom_wall, self._released_wall, started)
                if not self._held and now - quiet_since > silence:
                    raise EvaluationError(
                        f"odometry silent for {silence:g} s waiting for {what} (the simulator "
                        "is not held by navigator/querying)"
                    )
                self._changed.wait(0.1)
            return value

    def _announced(self, episode_id: str, since: float) -> dict | None:
        """The sim/episode of a load of `episode_id` at or after odometry time `since`.

        A latched message from an earlier load is older than odometry already received.
        """
        message = self._sim_episode
        if (
            message is not None
            and message.get("episode_id") == episode_id
            and message.get("start_time", -math.inf) >= since
        ):
            return message
        return None

    def _run_episode(self, episode: Episode) -> dict:
        episode_id = episode.episode_id
        parameter = Parameter("episode_id", value=episode_id).to_parameter_msg()
        result = self._call(self._set_parameters, SetParameters.Request(parameters=[parameter]))
        if not result.results or not result.results[0].successful:
            reason = result.results[0].reason if result.results else "empty response"
            raise EvaluationError(f"cannot set episode_id on the sim: {reason}")
        with self._lock:
            before_load = self._odom[0]
        self._trigger(self._load)
        self._trigger(self._navigator_reset)
        announced = self._wait(
            lambda: self._announced(episode_id, before_load),
            f"sim/episode for {episode_id}",
            self._params["service_timeout_s"],
        )
        settled = announced["start_time"] + self._params["settle_time_s"]
        self._wait(
            lambda: self._odom[0] > announced["start_time"] and self._odom[0] >= settled,
            f"odometry after loading {episode_id}",
        )
        # A navigator that reports why it stops decides whose stop a "stop" is.
        await_outcome = self._outcome_sub.get_publisher_count() > 0
        with self._lock:
            recorder = EpisodeRecorder(
                self._params["max_actions"],
                self._params["max_episode_time_s"],
                self._odom[0],
                await_outcome=await_outcome,
            )
            recorder.add_pose(*self._odom)
            self._recorder = recorder
            self._instruction = episode.instruction_text.strip()
        self._instruction_pub.publish(String(data=episode.instruction_text))
        try:
            self._wait(lambda: recorder.done or recorder.stop_seen, f"the end of {episode_id}")
            if not recorder.done:
                self._await_outcome(recorder, episode_id)
        finally:
            with self._lock:
                self._recorder = None
        if not recorder.stop_seen:  # a limit ended it: the navigator is still going
            self._trigger(self._navigator_stop)
        return evaluate_episode(episode, recorder, self._label)

    def _await_outcome(self, recorder: EpisodeRecorder, episode_id: str) -> None:
        """After a "stop" on action: wait for the navigator's reason (it comes on another topic)."""
        deadline = time.monotonic() + _OUTCOME_WAIT_S
        with self._changed:
            while not recorder.done and time.monotonic() < deadline:
                self._check_stopping()
                self._changed.wait(0.1)
            if recorder.done:
                return
            recorder.finish(END_AGENT_STOPPED)
        self.get_logger().warning(
            f"{episode_id}: no navigator/outcome within {_OUTCOME_WAIT_S:g} s of the stop; "
            "counted as the agent's stop"
        )


def main(args: list[str] | None = None) -> None:
    # SIGINT and SIGTERM end the process cleanly within 2 s (nvila_nav/nodes/process.py).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest("evaluator").install()
    node = None
    executor = None
    thread = None
    code = 0
    try:
        try:
            node = EvaluatorNode()
        except ValueError as error:  # a configuration error: one line, no traceback
            rclpy.logging.get_logger("evaluator").fatal(str(error))
            code = 2
            return
        request.running()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread = spin_in_background(executor, "evaluator-executor")
        why = request.wait(thread, node.finished if node.shutdown_when_done else None)
        code = 1 if why == "executor" or (why == "done" and node.error is not None) else 0
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            stop_executor(executor, thread)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        request.finish(code)


if __name__ == "__main__":
    main()
