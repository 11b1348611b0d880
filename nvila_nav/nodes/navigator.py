"""navigator node: camera frames + an instruction in, NaVILA mid-level actions out.

A lifecycle node around `Navigator` (nvila_nav/navigation.py, where the behaviour decisions on
preemption, fallbacks and stale frames are documented) and a `Policy` (nvila_nav/policies.py).
Topics, types and QoS follow docs/ros_interfaces.md. Node-level decisions:

- Lifecycle: on_configure reads the parameters and builds the policy (loads the model, which may
  take long), then creates the topics, services and the status timer; on_activate starts the
  worker thread; on_deactivate stops it (waiting for a query in flight) and publishes "stop";
  on_cleanup frees the model. A standalone process (`main`) configures and activates itself when
  `autostart` is true; set it false to drive the transitions from a launch file or
  `ros2 lifecycle set`. The `instruction` subscription exists from construction: an instruction
  that arrives while the node is still starting (configuring: the model may load for minutes, or
  inactive before its first activation) is kept, the latest one only, and started on activation
  (both logged); a "stop" instruction discards it. After a deactivation instructions are ignored
  with a warning, so an old instruction never starts a robot that an operator paused.
- A robot must not drive on random weights: configure refuses an nvila_core preset (random
  weights) unless `allow_random_weights` is true, naming that parameter and how to point `model`
  at a checkpoint; it checks this before loading anything.
- `navigator/querying` (std_msgs/Bool, latched) is true while the policy decides, refreshed
  every second of wall time, false otherwise: the simulator holds its physics and clock on it,
  so a slow model gets the same episode as a fast one. `navigator/outcome` (std_msgs/String,
  JSON) says why each instruction ended (`end`: agent_stopped, controller_failures,
  no_usable_action, camera_timeout, stop_requested) just before its final "stop" goes out.
- The `rgb` callback only converts the image and offers it to the history under the lock; the
  model runs in the worker thread, never in a callback. Malformed images are dropped with a
  throttled warning and counted in the status (`dropped_frames`). The arrival is taken first
  thing in the callback: frames beyond `max_frame_rate_hz` only refresh the camera-loss clock,
  and a converted one refreshes it once it is known usable, before its resize. The status
  counts arrivals (`camera_frames`) and gives percentiles of the gaps between them
  (`camera_gap_ms`) and of the delay from a wall-clock stamp to the callback
  (`camera_delay_ms`): long gaps with short delays mean frames lost on the way (DDS), long
  delays mean frames that waited (a busy process).
- Everything goes out under one lock, so an action decided by the worker can never follow a stop
  from a service or a new instruction on the wire.
- `navigator/status` and `diagnostics` carry the same DiagnosticArray at `status_rate_hz` from a
  timer; the motion controller uses `navigator/status` as the action-stream heartbeat, so it is a
  lifecycle publisher (silent unless active), while `diagnostics` also reports an inactive node.
- The model's frame count must equal `num_frames` (the prompt has one <image> per frame), so a
  mismatch fails configure instead of silently resampling.
- Inputs a robot's drivers publish must be heard: `rgb` and `odom` use sensor-data QoS by
  default (best effort: hears best-effort and reliable publishers), `instruction` listens with
  a reliable and a best-effort subscription (the same text on both counts once), and `e_stop`
  with three (reliable + transient local, reliable + volatile, best effort), as the motion
  controller does. `nvila_nav/nodes/inputs.py` warns, naming the topic and the peer, about
  QoS-incompatible or wrongly typed publishers and a silent camera, again every
  `input_warn_period_s` while it lasts, and lists them in the status.
- Bounded inputs: instructions longer than `max_instruction_chars` are rejected with a
  shortened log line; camera frames are downscaled on arrival (`frame_size`), so the history
  never holds raw 4K frames, and a reset or a new instruction lets their memory go.
- E-stop: reset is not restart (nvila_nav/navigation.py): an interrupted instruction is paused
  and continues only when the motion controller reports "ready" on `motion_controller/state`
  after its explicit resume, or on a new instruction. A camera that stops while the robot
  moves stops it within `camera_loss_timeout_s`.
- Callbacks log and drop whatever fails instead of raising into the executor. `main` handles
  SIGINT and SIGTERM through `nvila_nav/nodes/process.py`: the final "stop" goes out, and the
  process exits within 2 s, configured or not.
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
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from nvila_core.model.configuration import list_presets
from nvila_nav.history import DecisionHistory, FrameHistory
from nvila_nav.image_conversion import ImageConversionError, image_to_rgb, shrink_frame
from nvila_nav.navigation import Command, Level, NavigationConfig, Navigator, is_stop_instruction
from nvila_nav.nodes.callbacks import logged, quaternion_yaw
from nvila_nav.nodes.inputs import (
    QOS_CHOICES,
    ArrivalStats,
    InputMonitor,
    SubscriptionEventCallbacks,
    qos_profile,
)
from nvila_nav.nodes.parameters import ParameterSpec, declare_all
from nvila_nav.nodes.process import ShutdownRequest, spin_in_background, stop_executor
from nvila_nav.policies import (
    DECODINGS,
    POLICY_KINDS,
    NVILAPolicy,
    Policy,
    PolicyUnavailable,
    make_policy,
)

_CONFIGURE = "Read on configure."
_POLL_PERIOD_S = 0.05
"""How often the idle worker re-checks timeouts; events (frames, results) wake it at once."""
_WARN_THROTTLE_S = 5.0
_QUERYING_REFRESH_S = 1.0
"""Wall-time period at which a true navigator/querying is repeated while a query runs (the
simulator releases a hold that is not refreshed, e.g. after a crash)."""
EXPORT_BACKENDS = ("onnxruntime", "tensorrt")
_OTHER_POLICY_FRAME_SIDE = 448
"""Longest side kept for policies that do not look at pixels (frame_size 0)."""
_DUPLICATE_WINDOW_S = 1.0
"""instruction_qos any: the same text on the other subscription within this long counts once."""
_WALL_STAMP_WINDOW_S = 60.0
"""A camera stamp this close to wall-clock time is taken as one (a delivery delay is counted)."""
_LOGGED_CHARS = 120
"""Instruction text longer than this is shortened in log lines."""
_WORKER_JOIN_S = 1.0
"""How long a shutdown waits for a policy query in flight before going on without it."""
LATCHED = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
E_STOP_QOS = (
    LATCHED,
    QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
)
"""e_stop subscriptions: together they hear a publisher of any reliability and durability."""
QUIET = SubscriptionEventCallbacks(incompatible_qos=lambda _info: None)
"""Event callbacks of a subscription that some publishers are expected not to match."""

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "autostart",
        True,
        "Standalone process only (main): configure and activate at start-up. False leaves the "
        "node unconfigured for a launch file or `ros2 lifecycle set`. Read at start-up.",
        read_only=True,
    ),
    ParameterSpec(
        "policy",
        "nvila",
        "nvila: the NVILA/NaVILA model; expert: the simulator's shortest-path oracle on "
        "sim/episode and odom (tests the graph without a trained model); random: uniform over "
        "the ten actions (seeded by random_seed); forward: always move forward 75 cm "
        f"(baselines). {_CONFIGURE}",
        choices=POLICY_KINDS,
    ),
    ParameterSpec(
        "random_seed",
        0,
        "Seed of the random policy (with the instruction text: reproducible per episode). "
        f"{_CONFIGURE}",
        min_value=0,
        max_value=2**31 - 1,
    ),
    ParameterSpec(
        "blank_frames",
        False,
        "nvila only: the model sees black frames instead of the camera (the instruction-only "
        f"ablation baseline; never on a robot). {_CONFIGURE}",
    ),
    ParameterSpec(
        "model",
        "tiny",
        "Checkpoint directory, or an nvila_core preset name (presets have RANDOM weights: "
        f"tests and demos only, refused unless allow_random_weights). {_CONFIGURE}",
    ),
    ParameterSpec(
        "allow_random_weights",
        False,
        "Let the nvila policy run a preset with RANDOM weights (tests, demos, the simulator). "
        "False refuses it at configure, before anything loads: a robot must not drive on "
        f"meaningless actions. {_CONFIGURE}",
    ),
    ParameterSpec(
        "backend",
        "torch",
        "nvila_core execution backend: torch (model = checkpoint or preset), onnxruntime or "
        "tensorrt (model = an `nvila-core export` folder; tensorrt needs its engines from "
        f"`nvila-core build-engine`). {_CONFIGURE}",
        choices=("torch", "onnxruntime", "tensorrt"),
    ),
    ParameterSpec(
        "device",
        "auto",
        f"torch device: auto (CUDA when available), cpu, cuda, cuda:1, ... {_CONFIGURE}",
    ),
    ParameterSpec(
        "dtype",
        "",
        f"float32, float16 or bfloat16; empty keeps the checkpoint's. {_CONFIGURE}",
    ),
    ParameterSpec(
        "max_new_tokens",
        32,
        f"Generated tokens per query (NaVILA: 32; decoding generate only). {_CONFIGURE}",
        min_value=1,
        max_value=4096,
    ),
    ParameterSpec(
        "decoding",
        "generate",
        "nvila only. generate: greedy text parsed by the action grammar (NaVILA); choose: the "
        "most probable of the grammar's ten answer sentences (never unparseable, one prefill "
        "plus a few tokens per answer); choose_kind: the same scores, the most probable kind "
        f"(move, turn left, turn right, stop) first, then its amount. {_CONFIGURE}",
        choices=DECODINGS,
    ),
    ParameterSpec(
        "compute_threads",
        0,
        "nvila only: CPU threads of the model (torch: the whole process's intra-op threads; "
        "onnxruntime: its session pool). 0: the library's default, one per core. On a small "
        "CPU that also runs the camera, DDS and the controller, fewer threads than cores are "
        f"often faster (docs/deployment.md). {_CONFIGURE}",
        min_value=0,
        max_value=1024,
    ),
    ParameterSpec(
        "cache_frames",
        128,
        "Per-frame feature cache [frames]; above history_capacity every history frame goes "
        f"through the vision tower once. 0 disables it. {_CONFIGURE}",
        min_value=0,
        max_value=100000,
    ),
    ParameterSpec(
        "keep_rate_hz",
        2.0,
        "History cadence: a frame is kept every 1/keep_rate_hz s (NaVILA: 2 Hz, one per "
        f"25 cm / 15 deg at its speeds) [Hz]. {_CONFIGURE}",
        min_value=0.01,
        max_value=100.0,
    ),
    ParameterSpec(
        "history_capacity",
        64,
        "Frames kept per instruction before the oldest half is thinned (the history still "
        f"spans the whole instruction). {_CONFIGURE}",
        min_value=2,
        max_value=100000,
    ),
    ParameterSpec(
        "num_frames",
        0,
        "Frames per query (history + the current one); 0 takes the model's num_video_frames "
        f"(8 for NaVILA, 5 for navila-nano), any other value must equal it. {_CONFIGURE}",
        min_value=0,
        max_value=1024,
    ),
    ParameterSpec(
        "max_frame_age_s",
        1.0,
        "A query starts only when the newest camera frame is at most this old (stamp vs. "
        f"this node's clock) [s]. {_CONFIGURE}",
        min_value=0.001,
    ),
    ParameterSpec(
        "frame_timeout_s",
        5.0,
        f"Waiting longer than this for a fresh frame ends the instruction [s]. {_CONFIGURE}",
        min_value=0.001,
    ),
    ParameterSpec(
        "max_reparse",
        1,
        "Re-queries after unparseable model output (or a policy that cannot decide) before "
        f"the instruction ends with stop. {_CONFIGURE}",
        min_value=0,
        max_value=100,
    ),
    ParameterSpec(
        "max_controller_failures",
        3,
        "Consecutive failed actions (timed_out, watchdog, rejected, cancelled, unexpected "
        f"estopped, no result) before the instruction ends with stop. {_CONFIGURE}",
        min_value=1,
        max_value=100,
    ),
    ParameterSpec(
        "result_timeout_s",
        10.0,
        "No action_result for this long counts as a failed action [s]; 0 waits forever. "
        f"{_CONFIGURE}",
        min_value=0.0,
    ),
    ParameterSpec(
        "base_frame",
        "base_link",
        f"frame_id of action_goal and navigator/markers. {_CONFIGURE}",
    ),
    ParameterSpec(
        "camera_loss_timeout_s",
        0.3,
        "No camera frame for this long (arrival on this node's clock) while an action executes "
        "publishes stop at once, so the robot never drives blind; the instruction then waits "
        f"for frames up to frame_timeout_s. 0 disables the check [s]. {_CONFIGURE}",
        min_value=0.0,
    ),
    ParameterSpec(
        "frame_size",
        0,
        "Camera frames are downscaled on arrival, before the history keeps them, so a 4K camera "
        "costs no more memory than a small one. 0: the model's input (nvila: one square tile "
        "of the model's tile size, the resize the model makes itself; other policies: at most "
        "448 px on the longer side); > 0: at most this many px on the longer side. "
        f"{_CONFIGURE}",
        min_value=0,
        max_value=16384,
    ),
    ParameterSpec(
        "max_frame_rate_hz",
        10.0,
        "Camera frames are converted and offered to the history at most this often; faster "
        "frames only show the camera is alive (camera_loss_timeout_s). Keeps a 30 Hz 4K camera "
        f"from filling the CPU [Hz]. {_CONFIGURE}",
        min_value=0.1,
        max_value=1000.0,
    ),
    ParameterSpec(
        "max_instruction_chars",
        2000,
        "Longer instructions are rejected with a logged (shortened) reason; the current one "
        "goes on. Keeps a runaway publisher from filling the model's context. Read at start-up.",
        read_only=True,
        min_value=1,
        max_value=1000000,
    ),
    ParameterSpec(
        "camera_qos",
        "sensor_data",
        "QoS of the rgb subscription: sensor_data (best effort; hears best-effort and reliable "
        "cameras), reliable (reliable cameras only) or best_effort (as sensor_data, depth 10). "
        f"{_CONFIGURE}",
        choices=QOS_CHOICES,
    ),
    ParameterSpec(
        "odom_qos",
        "sensor_data",
        "QoS of the odom subscription (sensor_data hears best-effort and reliable odometry). "
        f"{_CONFIGURE}",
        choices=QOS_CHOICES,
    ),
    ParameterSpec(
        "instruction_qos",
        "any",
        "QoS of the instruction subscription: any (a reliable and a best-effort subscription, "
        "the same text arriving on both within 1 s counts once), reliable or best_effort. "
        "Read at start-up.",
        read_only=True,
        choices=("any", "reliable", "best_effort"),
    ),
    ParameterSpec(
        "input_timeout_s",
        3.0,
        "While active, no camera frame for this long is warned about naming the topic, and "
        f"so are QoS-incompatible or wrongly typed publishers on any input [s]. {_CONFIGURE}",
        min_value=0.1,
    ),
    ParameterSpec(
        "input_warn_period_s",
        10.0,
        "Such an input problem is logged again every this many seconds while it lasts. Read at "
        "start-up.",
        read_only=True,
        min_value=0.5,
    ),
    ParameterSpec(
        "status_rate_hz",
        5.0,
        "Rate of navigator/status and diagnostics [Hz]; navigator/status is the motion "
        f"controller's heartbeat, so keep it well above 1/action_stream_timeout_s. {_CONFIGURE}",
        min_value=2.0,
        max_value=100.0,
    ),
)

_LEVELS = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN}


def shorten(text: str, limit: int = _LOGGED_CHARS) -> str:
    """`text` for a log line: at most `limit` characters, with how much was left out."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def random_weights_refusal(model: str) -> str:
    return (
        f"model {model!r} is an nvila_core preset with RANDOM weights: a robot must not drive "
        "on it. Point the navigator's model at a checkpoint directory (ros2 launch nvila_nav "
        "navigation.launch.py model:=/path/to/checkpoint, or nvila-nav-bringup navigation "
        "--model /path/to/checkpoint), or set the navigator parameter allow_random_weights: true "
        "(tests and demos only)"
    )


def check_model(policy: str, model: str, backend: str, allow_random_weights: bool) -> None:
    """Refuse, before anything loads, a model the nvila policy cannot or must not run: a preset
    (random weights) without `allow_random_weights`, or a path that is not a folder. Raises
    ValueError with a message that names the parameter to change."""
    if policy != "nvila":
        return
    if Path(model).expanduser().is_dir():
        return
    if backend in EXPORT_BACKENDS:
        raise ValueError(
            f"model {model!r} is not a folder: backend {backend} needs an `nvila-core export` "
            "folder"
        )
    presets = list_presets()
    if model in presets:
        if not allow_random_weights:
            raise ValueError(random_weights_refusal(model))
        return
    raise ValueError(
        f"model {model!r} is neither a checkpoint directory nor a preset "
        f"({', '.join(presets)}): set the navigator parameter model"
    )


class NavigatorNode(LifecycleNode):
    """Asks the policy for the next action whenever the previous one is done, in a worker thread."""

    def __init__(self, node_name: str = "navigator", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        initial = declare_all(self, PARAMETERS)
        self._autostart = initial["autostart"]
        self._max_instruction_chars = initial["max_instruction_chars"]
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._worker: threading.Thread | None = None
        self._active = False
        self._navigator: Navigator | None = None
        self._policy: Policy | None = None
        self._params: dict[str, Any] = {}
        self._dropped_frames = 0
        self._entities: list[tuple[Callable[[Any], Any], Any]] = []
        self._querying = threading.Event()
        self._querying_pub: Any = None
        self._keeper: threading.Thread | None = None
        self._pending_instruction: str | None = None
        self._ever_active = False
        self._frame_side = (0, 0)
        self._last_converted = -math.inf
        self._last_frame_ok = False
        self._min_frame_gap_s = 0.0
        self._camera_gaps = ArrivalStats()
        self._camera_delays = ArrivalStats()
        self._last_arrival: float | None = None
        self._recent_instructions: list[tuple[float, str]] = []
        self._monitor = InputMonitor(self, initial["input_warn_period_s"])
        self._wall_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self.configure_error: str | None = None
        """Why the last configure failed (None after a success), for in-process callers."""
        # From construction on, so an instruction sent while the model loads is not lost.
        mode = initial["instruction_qos"]
        self._instruction_dedupe = mode == "any"
        for name in ("reliable", "best_effort") if mode == "any" else (mode,):
            # with "any", best-effort publishers do not match the reliable one: no warning
            quiet = mode == "any" and name == "reliable"
            sub = self.create_subscription(
                String,
                "instruction",
                self._on_instruction,
                qos_profile(name),
                event_callbacks=QUIET if quiet else self._monitor.events("instruction"),
            )
        self._monitor.watch(
            "instruction",
            sub,
            String,
            hint="Set the navigator parameter instruction_qos, or the publisher's QoS.",
            expected_publisher=False,
        )
        self._monitor_timer = self.create_timer(
            initial["input_warn_period_s"] / 4, self._on_monitor_timer, clock=self._wall_clock
        )

    @property
    def autostart(self) -> bool:
        return self._autostart

    @property
    def configured(self) -> bool:
        """Whether the last configure succeeded (and no cleanup followed)."""
        return self._navigator is not None

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = self._read_parameters()
            check_model(
                params["policy"], params["model"], params["backend"], params["allow_random_weights"]
            )
            config = NavigationConfig(
                max_reparse=params["max_reparse"],
                max_controller_failures=params["max_controller_failures"],
                max_frame_age_s=params["max_frame_age_s"],
                frame_timeout_s=params["frame_timeout_s"],
                result_timeout_s=params["result_timeout_s"],
                camera_loss_timeout_s=params["camera_loss_timeout_s"],
            )
            self.get_logger().info(f"loading the {params['policy']} policy ({params['model']})")
            policy = make_policy(
                params["policy"],
                params["model"],
                params["backend"],
                params["device"],
                params["dtype"],
                params["cache_frames"],
                params["max_new_tokens"],
                params["random_seed"],
                params["blank_frames"],
                params["decoding"],
                params["compute_threads"],
            )
            num_frames = params["num_frames"]
            if isinstance(policy, NVILAPolicy):
                if num_frames and policy.num_frames != num_frames:
                    policy.close()
                    raise ValueError(
                        f"num_frames is {num_frames} but the model takes "
                        f"{policy.num_frames} frames per query (0 takes the model's)"
                    )
                num_frames = policy.num_frames
            num_frames = num_frames or 8
            history = FrameHistory(
                params["keep_rate_hz"], max(params["history_capacity"], num_frames), num_frames
            )
            decisions = DecisionHistory(num_frames) if policy.history == "recent" else None
            if (
                isinstance(policy, NVILAPolicy)
                and policy.engine.random_weights
                and not params["allow_random_weights"]
            ):
                policy.close()
                raise ValueError(random_weights_refusal(params["model"]))
        except Exception as error:
            self.configure_error = str(error)
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self._params = params
        self._policy = policy
        self._navigator = Navigator(history, config, decisions)
        self._dropped_frames = 0
        # 1 ms of slack: a camera at exactly the cap must not lose every other frame to jitter
        self._min_frame_gap_s = max(1.0 / params["max_frame_rate_hz"] - 0.001, 0.0)
        self._last_converted = -math.inf
        self._camera_gaps = ArrivalStats()
        self._camera_delays = ArrivalStats()
        self._last_arrival = None
        if params["frame_size"]:
            self._frame_side = (params["frame_size"], 0)
        elif isinstance(policy, NVILAPolicy):
            self._frame_side = (0, policy.tile_size)
        else:
            self._frame_side = (_OTHER_POLICY_FRAME_SIDE, 0)
        self._create_interfaces()
        if isinstance(policy, NVILAPolicy) and policy.engine.random_weights:
            self.get_logger().warning(
                f"model {params['model']!r} has RANDOM weights: its actions are meaningless"
            )
        self.get_logger().info(f"configured: {self._describe_policy()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self._halt.clear()
        self._worker = threading.Thread(target=self._work, name="navigator_worker", daemon=True)
        self._worker.start()
        self._keeper = threading.Thread(
            target=self._keep_querying_fresh, name="navigator_querying", daemon=True
        )
        self._keeper.start()
        with self._lock:
            self._active = True
            self._ever_active = True
            pending, self._pending_instruction = self._pending_instruction, None
            if pending is not None:
                self._publish(self._navigator.instruct(pending, self._now_s()))
        if pending is None:
            self.get_logger().info("active: waiting for an instruction")
        else:
            self.get_logger().info(
                f"active: starting the instruction received earlier: {pending!r}"
            )
            self._wake.set()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        with self._lock:
            self._publish(self._navigator.stop("navigator deactivated", self._now_s()))
            self._active = False
        self.get_logger().info("inactive: published stop")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._shut_down("navigator shutting down")
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        """Stop the robot and free the model before the node goes away."""
        self._shut_down("navigator destroyed")
        self._monitor_timer.cancel()
        super().destroy_node()

    def halt(self, reason: str = "shutting down") -> None:
        """First step of a shutdown: ask nothing more and publish "stop" now, without waiting
        for a query in flight (its answer is dropped)."""
        self._halt.set()
        self._wake.set()
        with self._lock:
            if self._active and self._navigator is not None and self.context.ok():
                self._publish(self._navigator.stop(reason, self._now_s()))
                self._active = False

    def _shut_down(self, reason: str) -> None:
        self.halt(reason)
        if self._stop_worker(timeout_s=_WORKER_JOIN_S):
            self._release()
        else:  # a query still runs: freeing the model under it could crash; the process ends
            self.get_logger().warning(
                f"a policy query still runs after {_WORKER_JOIN_S:g} s; not waiting for it"
            )

    def _read_parameters(self) -> dict[str, Any]:
        params = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        for spec in PARAMETERS:
            if spec.choices and params[spec.name] not in spec.choices:
                raise ValueError(
                    f"parameter {spec.name}={params[spec.name]!r} is not one of "
                    f"{', '.join(spec.choices)}"
                )
        return params

    def _create_interfaces(self) -> None:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )

        def lifecycle_publisher(msg_type: Any, topic: str) -> Any:
            publisher = self.create_lifecycle_publisher(msg_type, topic, reliable)
            self._entities.append((self.destroy_lifecycle_publisher, publisher))
            return publisher

        def subscription(
            msg_type: Any, topic: str, callback: Any, qos: Any, events: Any = None
        ) -> None:
            sub = self.create_subscription(msg_type, topic, callback, qos, event_callbacks=events)
            self._entities.append((self.destroy_subscription, sub))

        def service(name: str, callback: Any) -> None:
            self._entities.append(
                (self.destroy_service, self.create_service(Trigger, name, callback))
            )

        self._action_pub = lifecycle_publisher(String, "action")
        self._outcome_pub = lifecycle_publisher(String, "navigator/outcome")
        self._goal_pub = lifecycle_publisher(PoseStamped, "action_goal")
        self._marker_pub = lifecycle_publisher(MarkerArray, "navigator/markers")
        self._status_pub = lifecycle_publisher(DiagnosticArray, "navigator/status")
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", reliable)
        self._entities.append((self.destroy_publisher, self._diag_pub))
        self._querying_pub = self.create_publisher(Bool, "navigator/querying", latched)
        self._entities.append((self.destroy_publisher, self._querying_pub))
        self._querying_pub.publish(Bool(data=False))
        params = self._params
        camera = self.create_subscription(
            Image,
            "rgb",
            self._on_image,
            qos_profile(params["camera_qos"]),
            event_callbacks=self._monitor.events("rgb"),
        )
        self._entities.append((self._forget_subscription("rgb"), camera))
        self._monitor.watch(
            "rgb",
            camera,
            Image,
            silence_s=params["input_timeout_s"],
            hint="Set the navigator parameter camera_qos (sensor_data hears every camera).",
        )
        odom = self.create_subscription(
            Odometry,
            "odom",
            self._on_odom,
            qos_profile(params["odom_qos"]),
            event_callbacks=self._monitor.events("odom"),
        )
        self._entities.append((self._forget_subscription("odom"), odom))
        self._monitor.watch(
            "odom",
            odom,
            Odometry,
            hint="Set the navigator parameter odom_qos (sensor_data hears every publisher).",
            expected_publisher=False,
        )
        subscription(String, "action_result", self._on_action_result, reliable)
        subscription(String, "sim/episode", self._on_episode, latched)
        for qos in E_STOP_QOS:  # a publisher matches one or two of them: no warnings
            subscription(Bool, "e_stop", self._on_estop, qos, QUIET)
        subscription(String, "motion_controller/state", self._on_controller_state, latched)
        service("navigator/stop", self._on_stop)
        service("navigator/reset", self._on_reset)
        timer = self.create_timer(1.0 / self._params["status_rate_hz"], self._on_status_timer)
        self._entities.append((self.destroy_timer, timer))

    def _forget_subscription(self, key: str) -> Callable[[Any], Any]:
        def destroy(subscription: Any) -> None:
            self._monitor.forget(key)
            self.destroy_subscription(subscription)

        return destroy

    def _release(self) -> None:
        """Destroy what configure created and free the model."""
        for destroy, entity in reversed(self._entities):
            destroy(entity)
        self._entities.clear()
        self._querying_pub = None
        with self._lock:
            policy, self._policy = self._policy, None
            self._navigator = None
        if policy is not None:
            policy.close()

    # --- worker ----------------------------------------------------------------------------

    def _stop_worker(self, timeout_s: float | None = None) -> bool:
        """Stop the worker; a query in flight finishes first (its answer is then dropped).
        False when it did not finish within `timeout_s`."""
        worker, self._worker = self._worker, None
        keeper, self._keeper = self._keeper, None
        if worker is None:
            return True
        self._halt.set()
        self._wake.set()
        worker.join(timeout_s)
        if keeper is not None:
            keeper.join(timeout_s)
        self._set_querying(False)
        return not worker.is_alive()

    def _set_querying(self, querying: bool) -> None:
        """Tell the graph (the simulator's hold) whether the policy is deciding now."""
        if querying:
            self._querying.set()
        else:
            self._querying.clear()
        publisher = self._querying_pub
        if publisher is not None and self.context.ok():
            publisher.publish(Bool(data=querying))

    def _keep_querying_fresh(self) -> None:
        """Repeat a true navigator/querying every _QUERYING_REFRESH_S of wall time (a thread:
        the node's timers run on sim time, which stands still while the simulator is held)."""
        while not self._halt.wait(_QUERYING_REFRESH_S):
            if self._querying.is_set():
                self._set_querying(True)

    def _work(self) -> None:
        navigator, policy = self._navigator, self._policy
        while not self._halt.is_set():
            try:
                self._wake.clear()
                with self._lock:
                    poll = navigator.poll(self._now_s())
                    self._publish(poll.commands)
                if poll.reset_policy:
                    policy.reset()
                if poll.query is None:
                    self._wake.wait(_POLL_PERIOD_S)
                    continue
                self._set_querying(True)
                try:
                    try:
                        outcome = policy.decide(poll.query.request)
                    except PolicyUnavailable as error:
                        outcome = error
                        self.get_logger().warning(f"policy cannot decide: {error}")
                    except Exception as error:
                        outcome = error
                        self.get_logger().error(f"policy failed:\n{traceback.format_exc()}")
                    if self._halt.is_set():
                        return
                    with self._lock:
                        self._publish(navigator.complete(poll.query, outcome, self._now_s()))
                finally:
                    # after the action is out, so the world resumes with the robot on its way
                    self._set_querying(False)
            except Exception:
                self.get_logger().error(f"navigator worker step failed:\n{traceback.format_exc()}")
                self._halt.wait(_POLL_PERIOD_S)

    def _publish(self, commands: list[Command]) -> None:
        """Publish each command on action, action_goal and the markers; the caller holds the lock."""
        frame = self._params["base_frame"]
        for command in commands:
            if command.end:
                outcome = {
                    "end": command.end,
                    "reason": command.reason,
                    "instruction": command.instruction,
                    "stamp": command.stamp_s,
                }
                self._outcome_pub.publish(String(data=json.dumps(outcome)))
            self._action_pub.publish(String(data=command.text))
            stamp = Time(seconds=max(command.stamp_s, 0.0)).to_msg()
            goal = PoseStamped()
            goal.header.stamp = stamp
            goal.header.frame_id = frame
            x, y, yaw = command.goal
            goal.pose.position.x, goal.pose.position.y = x, y
            goal.pose.orientation.z, goal.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
            self._goal_pub.publish(goal)
            self._marker_pub.publish(_markers(command, frame, stamp))
            self.get_logger().info(f"action: {command.text} ({command.reason})")

    # --- callbacks -------------------------------------------------------------------------

    @logged
    def _on_image(self, msg: Image) -> None:
        # The arrival is taken first thing and counts for the camera-loss check as soon as the
        # frame is known to be usable, so the time its resize takes never counts as silence.
        arrived = time.monotonic()
        arrived_s = self._now_s()
        self._count_arrival(arrived, msg)
        self._monitor.arrived("rgb")
        with self._lock:
            navigator = self._navigator
            if navigator is None:
                return
            if arrived - self._last_converted < self._min_frame_gap_s:
                if self._last_frame_ok:  # too soon to convert: alive, like the last one
                    navigator.frame_alive(arrived_s)
                return
            self._last_converted = arrived
        try:
            rgb = image_to_rgb(msg)  # checks the frame; the resize below takes longer
        except ImageConversionError as error:
            with self._lock:
                self._dropped_frames += 1
                self._last_frame_ok = False
                if self._navigator is not None:
                    self._navigator.drop_frame(str(error))
            self.get_logger().warning(
                f"dropped a malformed image on rgb: {error}", throttle_duration_sec=_WARN_THROTTLE_S
            )
            return
        with self._lock:
            if self._navigator is not None:
                self._navigator.frame_alive(arrived_s)
        longest, square = self._frame_side
        rgb = shrink_frame(rgb, longest, square)
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            navigator = self._navigator
            if navigator is None:
                return
            self._last_frame_ok = True
            jumped = navigator.offer_frame(rgb, stamp_s if stamp_s > 0 else arrived_s, arrived_s)
        if jumped:
            self.get_logger().warning("camera stamps went backwards: frame history restarted")
        self._wake.set()

    def _count_arrival(self, arrived: float, msg: Image) -> None:
        """Camera arrival statistics for the status: the gap since the previous frame, and
        the delay from the frame's stamp to its callback when the stamp is wall-clock time."""
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        delay_s = time.time() - stamp
        with self._lock:
            if self._last_arrival is not None:
                self._camera_gaps.add((arrived - self._last_arrival) * 1000.0)
            self._last_arrival = arrived
            if stamp > 0 and abs(delay_s) < _WALL_STAMP_WINDOW_S:
                self._camera_delays.add(delay_s * 1000.0)

    @logged
    def _on_instruction(self, msg: String) -> None:
        if len(msg.data) > self._max_instruction_chars:
            self.get_logger().error(
                f"rejected an instruction of {len(msg.data)} characters (max_instruction_chars "
                f"{self._max_instruction_chars}): {shorten(msg.data)}; the current one goes on"
            )
            return
        # control characters (NUL, BEL, ...) go, newlines and runs of spaces become one space
        printable = "".join(ch if ch.isprintable() else " " for ch in msg.data)
        text = " ".join(printable.split())
        if not text:
            self.get_logger().warning("ignored an empty instruction")
            return
        if self._instruction_dedupe and self._seen_recently(text):
            return
        with self._lock:
            if self._active:
                self._publish(self._navigator.instruct(text, self._now_s()))
                self._wake.set()
                kept = None
            elif self._ever_active:
                kept = "ignored"
            else:
                kept = "dropped" if is_stop_instruction(text) else "kept"
                self._pending_instruction = None if kept == "dropped" else text or None
        shown = shorten(text)
        if kept is None:
            self.get_logger().info(f"instruction: {shown}")
        elif kept == "ignored":
            self.get_logger().warning(f"inactive (deactivated): ignored instruction {shown}")
        elif kept == "dropped":
            self.get_logger().warning(
                f"instruction {shown} while starting: any instruction received earlier is dropped"
            )
        else:
            self.get_logger().info(
                f"instruction {shown} received while the navigator is starting (loading the "
                "policy): it starts as soon as the navigator is active"
            )

    def _seen_recently(self, text: str) -> bool:
        """instruction_qos any: True for the copy of a message the other subscription already
        delivered (a reliable publisher matches both)."""
        now = time.monotonic()
        recent = [
            (t, seen) for t, seen in self._recent_instructions if now - t < _DUPLICATE_WINDOW_S
        ]
        duplicate = any(seen == text for _, seen in recent)
        if duplicate:
            recent = [(t, seen) for t, seen in recent if seen != text]
        else:
            recent.append((now, text))
        self._recent_instructions = recent
        return duplicate

    @logged
    def _on_action_result(self, msg: String) -> None:
        with self._lock:
            self._publish(self._navigator.on_result(msg.data, self._now_s()))
        self._wake.set()

    @logged
    def _on_odom(self, msg: Odometry) -> None:
        self._monitor.arrived("odom")
        pose = msg.pose.pose
        with self._lock:
            self._navigator.set_pose(
                pose.position.x, pose.position.y, quaternion_yaw(pose.orientation)
            )

    @logged
    def _on_episode(self, msg: String) -> None:
        episode = json.loads(msg.data)
        if not isinstance(episode, dict):
            raise ValueError(f"sim/episode must hold a JSON object, got {type(episode).__name__}")
        with self._lock:
            self._navigator.set_episode(episode)
        self.get_logger().info(f"episode {episode.get('episode_id')!r} from sim/episode")

    @logged
    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            changed = self._navigator.set_estop(bool(msg.data), self._now_s())
            message = self._navigator.status(self._now_s()).message
        if changed:
            self.get_logger().warning(f"e-stop {'engaged' if msg.data else 'released'}: {message}")
            self._wake.set()

    @logged
    def _on_controller_state(self, msg: String) -> None:
        word = msg.data.strip()
        with self._lock:
            resumed = self._navigator.set_controller_state(word, self._now_s())
        if resumed:
            self.get_logger().info("motion controller resumed: continuing the paused instruction")
        self._wake.set()

    def _on_stop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._publish(self._navigator.stop("navigator/stop service", self._now_s()))
        response.success = True
        response.message = "instruction ended, stop published"
        return response

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._publish(self._navigator.reset(self._now_s()))
        self._wake.set()
        response.success = True
        response.message = "history, instruction and feature cache cleared"
        return response

    @logged
    def _on_status_timer(self) -> None:
        with self._lock:
            if self._navigator is None:
                return
            status = self._navigator.status(self._now_s())
            dropped = self._dropped_frames
            camera = {
                "camera_frames": str(self._camera_gaps.count + (self._last_arrival is not None)),
                "camera_gap_ms": self._camera_gaps.summary(),
                "camera_delay_ms": self._camera_delays.summary(),
            }
        level = _LEVELS.get(status.level, DiagnosticStatus.ERROR)
        message = status.message if self._active else f"inactive ({status.message})"
        problems = self._monitor.problems()
        if problems:
            level = max(level, DiagnosticStatus.WARN)
            message += "; " + "; ".join(problems.values())
        policy = self._policy
        if isinstance(policy, NVILAPolicy) and policy.engine.random_weights:
            level = max(level, DiagnosticStatus.WARN)
            message += "; model has RANDOM weights"
        values = {
            **self._policy_values(),
            **status.values(),
            "input_problems": str(len(problems)),
            "dropped_frames": str(dropped),
            **camera,
            "active": str(self._active).lower(),
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.get_name()}: navigator",
                message=message,
                values=[KeyValue(key=key, value=value) for key, value in values.items()],
            )
        ]
        self._status_pub.publish(array)
        self._diag_pub.publish(array)

    @logged
    def _on_monitor_timer(self) -> None:
        self._monitor.check(silence_applies=self._active)

    def _policy_values(self) -> dict[str, str]:
        policy = self._policy
        if isinstance(policy, NVILAPolicy):
            engine = policy.engine
            return {
                "policy": policy.name,
                "model": engine.config.name,
                "backend": engine.backend_name,
                "device": str(engine.backend.device),
            }
        return {"policy": policy.name if policy else "none", "model": "none", "backend": "none"}

    def _describe_policy(self) -> str:
        values = self._policy_values()
        return ", ".join(f"{key} {value}" for key, value in values.items())


def _markers(command: Command, frame: str, stamp: Any) -> MarkerArray:
    """A text with the instruction and action above the robot, and an arrow for the motion."""
    text = Marker()
    text.header.frame_id = frame
    text.header.stamp = stamp
    text.ns = "navigator"
    text.id = 0
    text.type = Marker.TEXT_VIEW_FACING
    text.action = Marker.ADD
    text.pose.position.z = 1.0
    text.pose.orientation.w = 1.0
    text.scale.z = 0.15
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    text.text = command.label
    arrow = Marker()
    arrow.header = text.header
    arrow.ns = "navigator"
    arrow.id = 1
    arrow.type = Marker.ARROW
    tip = command.arrow
    if tip is None:
        arrow.action = Marker.DELETE
    else:
        arrow.action = Marker.ADD
        arrow.pose.orientation.w = 1.0
        arrow.points = [Point(x=0.0, y=0.0, z=0.1), Point(x=tip[0], y=tip[1], z=0.1)]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.05, 0.1, 0.1
        arrow.color.g = arrow.color.a = 1.0
    return MarkerArray(markers=[text, arrow])


def main(args: list[str] | None = None) -> None:
    # rclpy's signal handlers would shut the context down at once, and the final "stop" could
    # not be published; SIGINT and SIGTERM go through ShutdownRequest (nodes/process.py).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest("navigator").install()
    node = None
    executor = None
    thread = None
    code = 0
    try:
        node = NavigatorNode()
        if node.autostart:
            node.trigger_configure()
            if node.configured:
                node.trigger_activate()
            else:
                node.get_logger().error("autostart: configure failed; staying unconfigured")
        request.running()
        executor = SingleThreadedExecutor()  # the model runs in its own worker thread
        executor.add_node(node)
        thread = spin_in_background(executor, "navigator-executor")
        if request.wait(thread) == "signal":
            node.halt(f"{request.signal_name} received")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        if executor is not None:
            stop_executor(executor, thread)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    request.finish(code)


if __name__ == "__main__":
    main()
