"""sim node: the embedded MuJoCo simulator (nvila_nav.sim) behind Isaac Sim's ROS 2 bridge names.

Publishes `rgb`, `camera_info`, `odom` and `clock`, obeys `cmd_vel`, and serves episodes to the
evaluator (`sim/load_episode`, `sim/reset`, latched `sim/episode`); docs/ros_interfaces.md has
the contract. Behaviour decisions:

- One thread owns the Simulator and its GL context (EGL contexts belong to a thread): it runs a
  fixed control tick of whole 5 ms physics steps and paces it to `real_time_factor` × wall
  clock. When the machine cannot keep up, sim time runs slower; physics is never skipped.
- Every stamp is sim time, which starts at 0 and never jumps back, not even on an episode load.
  Run the other nodes with use_sim_time:=true. `clock` goes out every tick, odometry at
  `odom_rate_hz` and the camera at `camera_rate_hz` (both counted in sim time).
- Odometry is exact and given in the scene's world frame (frame `odom` = world), so the
  evaluator can compare it with the episode's goal directly.
- `cmd_vel` is held until a newer one arrives or until `cmd_vel_timeout_s` of sim time passes;
  then the base stops on its own, as a real base's command timeout would.
- Service callbacks hand episode loads to the sim thread and wait for it; a lock guards what
  both sides share. `episode_id` and `episodes_file` are read when `sim/load_episode` is
  called, so callers set them through the standard parameter services first.
- At start-up the node loads `episode_id`, or the first episode of `episodes_file` when the id
  is empty, so images flow at once. Without `episodes_file` it idles: only `clock` ticks until
  an episode is loaded.
- The world does not run on while the model thinks: with `hold_while_querying` (default) the
  sim thread holds physics and the clock while the navigator's latched `navigator/querying` is
  true, so a slow model (seconds per decision on a loaded CPU) gets the same episode, in sim
  time and outcome, as a fast one. Episode loads are still served while held. The navigator
  repeats true every second of wall time; a hold not refreshed within `hold_timeout_s` (a
  crashed navigator) is released with a warning. Set it false for real-time use (a demo where
  the world should not wait for the model).
- Callbacks log and drop whatever fails instead of raising into the executor.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.image_conversion import rgb_to_image_fields
from nvila_nav.nodes.callbacks import logged
from nvila_nav.nodes.parameters import ParameterSpec, declare_all
from nvila_nav.nodes.process import ShutdownRequest, spin_in_background, stop_executor
from nvila_nav.sim.env import Observation, RenderingUnavailable, Simulator
from nvila_nav.sim.episodes import Episode, read_episodes
from nvila_nav.sim.mjcf import TIMESTEP
from nvila_nav.sim.robot import CameraConfig

_RESTART = "Read at start-up."
_DEFAULT_CAMERA = CameraConfig()
_LOAD_TIMEOUT_S = 60.0
"""How long a service waits for the sim thread to load an episode (building a scene takes ~1 s)."""

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "episodes_file",
        "",
        "R2R-format episodes (.json or .json.gz) served by sim/load_episode; read again when it "
        "changes. Empty: start idle.",
    ),
    ParameterSpec(
        "episode_id",
        "",
        "Episode that sim/load_episode loads (set it with sim/set_parameters first). At "
        "start-up, empty means the first episode of episodes_file.",
    ),
    ParameterSpec(
        "control_rate_hz",
        50.0,
        "Physics/control tick rate in sim time [Hz]; the period is rounded to whole 5 ms "
        f"physics steps. {_RESTART}",
        read_only=True,
        min_value=1.0,
        max_value=200.0,
    ),
    ParameterSpec(
        "real_time_factor",
        1.0,
        "Sim seconds per wall second the node aims for; >1 runs faster than real time. A slow "
        f"machine makes sim time run slower rather than skip physics. {_RESTART}",
        read_only=True,
        min_value=0.01,
        max_value=100.0,
    ),
    ParameterSpec(
        "camera_rate_hz",
        10.0,
        f"rgb and camera_info rate in sim time [Hz]. {_RESTART}",
        read_only=True,
        min_value=0.1,
        max_value=200.0,
    ),
    ParameterSpec(
        "odom_rate_hz",
        50.0,
        f"odom rate in sim time [Hz]; at most one message per control tick. {_RESTART}",
        read_only=True,
        min_value=0.1,
        max_value=200.0,
    ),
    ParameterSpec(
        "publish_clock",
        True,
        f"Publish sim time on clock every tick (for use_sim_time). {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "width",
        _DEFAULT_CAMERA.width,
        f"Image width [px]. {_RESTART}",
        read_only=True,
        min_value=8,
        max_value=4096,
    ),
    ParameterSpec(
        "height",
        _DEFAULT_CAMERA.height,
        f"Image height [px]. {_RESTART}",
        read_only=True,
        min_value=8,
        max_value=4096,
    ),
    ParameterSpec(
        "hfov_deg",
        _DEFAULT_CAMERA.hfov_deg,
        f"Horizontal field of view [deg] (square pixels). {_RESTART}",
        read_only=True,
        min_value=10.0,
        max_value=170.0,
    ),
    ParameterSpec(
        "camera_mount_height",
        _DEFAULT_CAMERA.mount_height,
        f"Camera height above the floor [m]. {_RESTART}",
        read_only=True,
        min_value=0.1,
        max_value=2.0,
    ),
    ParameterSpec(
        "camera_pitch_deg",
        _DEFAULT_CAMERA.pitch_deg,
        f"Camera pitch [deg], positive up. {_RESTART}",
        read_only=True,
        min_value=-60.0,
        max_value=60.0,
    ),
    ParameterSpec(
        "use_stamped",
        False,
        f"Subscribe geometry_msgs/TwistStamped instead of Twist on cmd_vel. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "cmd_vel_timeout_s",
        0.5,
        "A command older than this (sim time) is replaced by zero, like a base's own safety "
        f"stop [s]; 0 holds commands forever. {_RESTART}",
        read_only=True,
        min_value=0.0,
    ),
    ParameterSpec(
        "hold_while_querying",
        True,
        "Hold physics and the clock while navigator/querying is true (the policy decides), so "
        "a slow model gets the same episode as a fast one. False: the world runs on in real "
        f"time. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "hold_timeout_s",
        10.0,
        "Wall time after the last true on navigator/querying after which a hold is released "
        f"(the navigator repeats it every second while it decides) [s]. {_RESTART}",
        read_only=True,
        min_value=1.0,
    ),
    ParameterSpec(
        "camera_frame_id",
        "sim_camera",
        f"frame_id of rgb and camera_info. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "odom_frame_id",
        "odom",
        f"frame_id of odom; its origin is the scene's world origin. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "base_frame_id", "base_link", f"child_frame_id of odom. {_RESTART}", read_only=True
    ),
)


def _describe(exc: Exception) -> str:
    """Service-response text: expected failures (bad id, file, scene) speak for themselves."""
    if isinstance(exc, (ValueError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _LoadRequest:
    """An episode for the sim thread to load; `error` is set when it could not."""

    episode: Episode
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


def camera_info(camera: CameraConfig, frame_id: str) -> CameraInfo:
    """Pinhole intrinsics of `camera`: square pixels, centred principal point, no distortion."""
    fx = camera.width / 2.0 / math.tan(math.radians(camera.hfov_deg) / 2.0)
    cx = (camera.width - 1) / 2.0
    cy = (camera.height - 1) / 2.0
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width = camera.width
    info.height = camera.height
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def episode_message(episode: Episode, start_time: float, load_count: int) -> str:
    """The `sim/episode` JSON: what an evaluator needs to score the episode just loaded."""
    return json.dumps(
        {
            "episode_id": episode.episode_id,
            "scene_id": episode.scene_id,
            "instruction": episode.instruction_text,
            "start_position": list(episode.start_position),
            "start_yaw": episode.start_yaw,
            "goal": list(episode.goal.position),
            "radius": episode.goal.radius,
            "reference_path": [list(p) for p in episode.reference_path],
            "gt_locations": [list(p) for p in episode.gt_locations],
            "geodesic_distance": episode.info.get("geodesic_distance"),
            "goal_landmark": episode.info.get("goal_landmark"),
            "initial_turn_deg": episode.info.get("initial_turn_deg"),
            "start_time": start_time,
            "load_count": load_count,
        }
    )


class SimulatorNode(Node):
    """Runs `Simulator` in its own thread and bridges it to ROS like Isaac Sim's bridge does."""

    def __init__(self, node_name: str = "sim", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        # First: destroy_node() must work on a node whose construction failed.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sim: Simulator | None = None
        params = declare_all(self, PARAMETERS)
        if params["episodes_file"] and not Path(params["episodes_file"]).is_file():
            raise ValueError(f"episodes_file {params['episodes_file']} does not exist")
        self._camera = CameraConfig(
            width=params["width"],
            height=params["height"],
            hfov_deg=params["hfov_deg"],
            mount_height=params["camera_mount_height"],
            pitch_deg=params["camera_pitch_deg"],
        )
        steps = max(1, round(1.0 / params["control_rate_hz"] / TIMESTEP))
        self._tick_s = steps * TIMESTEP
        self._tick_ns = round(self._tick_s * 1e9)
        self._rtf = params["real_time_factor"]
        self._camera_period_ns = round(1e9 / params["camera_rate_hz"])
        self._odom_period_ns = round(1e9 / params["odom_rate_hz"])
        self._cmd_timeout_ns = round(params["cmd_vel_timeout_s"] * 1e9)
        self._publish_clock = params["publish_clock"]
        self._odom_frame = params["odom_frame_id"]
        self._base_frame = params["base_frame_id"]
        self._camera_info = camera_info(self._camera, params["camera_frame_id"])

        # Shared between the sim thread and callbacks, guarded by the lock.
        self._lock = threading.Lock()
        self._time_ns = 0
        self._command = (0.0, 0.0)
        self._command_ns = 0
        self._episode: Episode | None = None
        self._load_count = 0
        self._episode_cache: tuple[str, int, dict[str, Episode]] | None = None
        self._hold_enabled = params["hold_while_querying"]
        self._hold_timeout_s = params["hold_timeout_s"]
        self._hold_until: float | None = None
        """Wall time (monotonic) until which the navigator holds the world; None: not held."""
        self.held_s = 0.0
        """Wall seconds the world stood still for the navigator (for logs and tests)."""
        # Owned by the sim thread.
        self._sim = Simulator(self._camera)
        self._requests: queue.Queue[_LoadRequest] = queue.Queue()
        self._next_camera_ns: int | None = None
        self._next_odom_ns: int | None = None
        self._camera_on = True

        sensor = qos_profile_sensor_data
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._rgb_pub = self.create_publisher(Image, "rgb", sensor)
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", sensor)
        self._odom_pub = self.create_publisher(Odometry, "odom", reliable)
        self._clock_pub = self.create_publisher(Clock, "clock", reliable)
        self._episode_pub = self.create_publisher(String, "sim/episode", latched)
        self.create_subscription(
            TwistStamped if params["use_stamped"] else Twist, "cmd_vel", self._on_cmd_vel, reliable
        )
        self.create_service(Trigger, "sim/load_episode", self._on_load_episode)
        self.create_service(Trigger, "sim/reset", self._on_reset)
        if self._hold_enabled:
            self.create_subscription(Bool, "navigator/querying", self._on_querying, latched)

        if params["episodes_file"]:
            # Before the sim thread exists, so a bad start-up episode fails the constructor.
            self._load(self._find_episode(params["episodes_file"], params["episode_id"] or None))
        self._thread = threading.Thread(target=self._run, name="sim", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"simulator ready: {self._camera.width}x{self._camera.height} camera at "
            f"{params['camera_rate_hz']:g} Hz, {1.0 / self._tick_s:g} Hz control, "
            f"real-time factor {self._rtf:g}, "
            f"{'held while the navigator decides' if self._hold_enabled else 'never held'}, "
            + (f"episodes from {params['episodes_file']}" if params["episodes_file"] else "idle")
        )

    def destroy_node(self) -> None:
        """Stop the sim thread (it frees the renderer on its way out) before the endpoints go."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                self.get_logger().error("sim thread did not stop within 10 s")
        elif self._sim is not None:
            self._sim.close()  # construction failed before the thread took it over
        super().destroy_node()

    @property
    def current_episode(self) -> Episode | None:
        """The episode the robot is in (None while idle)."""
        with self._lock:
            return self._episode

    # --- episodes -------------------------------------------------------------------------

    def _find_episode(self, path: str, episode_id: str | None) -> Episode:
        """Episode `episode_id` of `path` (the first when None); re-reads the file when it changed.

        Raises ValueError or OSError with a message fit for a service response.
        """
        mtime = os.stat(path).st_mtime_ns
        with self._lock:
            cache = self._episode_cache
        if cache is None or cache[:2] != (path, mtime):
            episodes = {e.episode_id: e for e in read_episodes(path)}
            if not episodes:
                raise ValueError(f"{path} holds no episodes")
            cache = (path, mtime, episodes)
            with self._lock:
                self._episode_cache = cache
        episodes = cache[2]
        if episode_id is None:
            return next(iter(episodes.values()))
        if episode_id not in episodes:
            raise ValueError(
                f"episode {episode_id!r} is not in {Path(path).name} ({len(episodes)} episodes)"
            )
        return episodes[episode_id]

    def _request_load(self, episode: Episode) -> str | None:
        """Have the sim thread load `episode`; None on success, else why not."""
        if self._thread is None or not self._thread.is_alive():
            return "the simulation thread is not running"
        request = _LoadRequest(episode)
        self._requests.put(request)
        if not request.done.wait(_LOAD_TIMEOUT_S):
            return f"the simulation thread did not load the episode within {_LOAD_TIMEOUT_S:g} s"
        return request.error

    def _on_load_episode(
        self, _request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        try:
            path = self.get_parameter("episodes_file").value
            episode_id = self.get_parameter("episode_id").value
            if not path:
                raise ValueError("parameter episodes_file is empty")
            if not episode_id:
                raise ValueError("parameter episode_id is empty; set it with sim/set_parameters")
            episode = self._find_episode(path, episode_id)
            error = self._request_load(episode)
        except Exception as exc:  # a service must answer, whatever went wrong
            error = _describe(exc)
        return self._answer(response, error, "loaded")

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        episode = self.current_episode
        try:
            error = "no episode loaded" if episode is None else self._request_load(episode)
        except Exception as exc:
            error = _describe(exc)
        return self._answer(response, error, "restarted")

    def _answer(self, response: Trigger.Response, error: str | None, verb: str):
        response.success = error is None
        if error is None:
            episode = self.current_episode
            response.message = (
                f"{verb} episode {episode.episode_id} ({episode.scene_id}): "
                f"{episode.instruction_text}"
            )
            self.get_logger().info(response.message)
        else:
            response.message = error
            self.get_logger().warning(f"episode not {verb}: {error}")
        return response

    # --- commands -------------------------------------------------------------------------

    @logged
    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        vx, wz = float(twist.linear.x), float(twist.angular.z)
        if not (math.isfinite(vx) and math.isfinite(wz)):
            self.get_logger().warning(f"dropped non-finite cmd_vel ({vx}, {wz})")
            return
        with self._lock:
            self._command = (vx, wz)
            self._command_ns = self._time_ns

    @logged
    def _on_querying(self, msg: Bool) -> None:
        with self._lock:
            self._hold_until = time.monotonic() + self._hold_timeout_s if msg.data else None

    def _held(self) -> bool:
        """Whether the navigator holds the world now (a stale hold is released, once, loudly)."""
        with self._lock:
            until = self._hold_until
            if until is not None and time.monotonic() > until:
                self._hold_until = until = None
                stale = True
            else:
                stale = False
        if stale:
            self.get_logger().warning(
                f"navigator/querying stayed true without a refresh for {self._hold_timeout_s:g} s "
                "(navigator gone?): the simulation runs on"
            )
        return until is not None

    # --- sim thread -----------------------------------------------------------------------

    def _run(self) -> None:
        """The simulation loop: serve loads, step, publish, then sleep to keep the pace."""
        next_wall = time.monotonic()
        try:
            while not self._stopping.is_set() and self.context.ok():
                try:
                    self._serve_requests()
                    if self._held():
                        # No physics, no clock: the world waits for the model's decision.
                        self._stopping.wait(self._tick_s)
                        self.held_s += self._tick_s
                        next_wall = time.monotonic()
                        continue
                    self._tick()
                except Exception:
                    if not self.context.ok():
                        break
                    self.get_logger().error(
                        f"simulation tick failed:\n{traceback.format_exc()}",
                        throttle_duration_sec=5.0,
                    )
                next_wall += self._tick_s / self._rtf
                delay = next_wall - time.monotonic()
                if delay > 0:
                    self._stopping.wait(delay)
                elif delay < -self._tick_s:
                    # Behind: forget the debt, so sim time runs slower instead of racing later.
                    next_wall = time.monotonic()
        finally:
            self._sim.close()
            while not self._requests.empty():
                request = self._requests.get_nowait()
                request.error = "the simulator is shutting down"
                request.done.set()

    def _serve_requests(self) -> None:
        while not self._requests.empty():
            request = self._requests.get_nowait()
            try:
                self._load(request.episode)
            except Exception as exc:
                request.error = _describe(exc)
            finally:
                request.done.set()

    def _load(self, episode: Episode) -> None:
        """Put the robot at the episode's start at rest and announce the episode (sim thread)."""
        self._sim.reset(episode, render=False)
        with self._lock:
            self._episode = episode
            self._command = (0.0, 0.0)
            self._load_count += 1
            start_ns, count = self._time_ns, self._load_count
        # The first tick after a load sends odometry and a frame of the new start, and the
        # regular cadence counts from there.
        self._next_camera_ns = self._next_odom_ns = None
        text = episode_message(episode, start_ns * 1e-9, count)
        self._episode_pub.publish(String(data=text))

    def _tick(self) -> None:
        with self._lock:
            loaded = self._episode is not None
            vx, wz = self._command
            if self._cmd_timeout_ns and self._time_ns - self._command_ns > self._cmd_timeout_ns:
                vx = wz = 0.0
        obs = self._sim.step(vx, wz, self._tick_s, render=False) if loaded else None
        with self._lock:
            self._time_ns += self._tick_ns
            now_ns = self._time_ns
        stamp = Time(nanoseconds=now_ns).to_msg()
        if self._publish_clock:
            self._clock_pub.publish(Clock(clock=stamp))
        if obs is None:
            return
        if self._next_odom_ns is None or now_ns >= self._next_odom_ns:
            self._next_odom_ns = (self._next_odom_ns or now_ns) + self._odom_period_ns
            self._publish_odom(obs, stamp)
        if self._camera_on and (self._next_camera_ns is None or now_ns >= self._next_camera_ns):
            self._next_camera_ns = (self._next_camera_ns or now_ns) + self._camera_period_ns
            self._publish_camera(stamp)

    def _publish_odom(self, obs: Observation, stamp: Any) -> None:
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = self._odom_frame
        odom.child_frame_id = self._base_frame
        odom.pose.pose.position.x = obs.pose.x
        odom.pose.pose.position.y = obs.pose.y
        odom.pose.pose.orientation.z = math.sin(obs.pose.yaw / 2.0)
        odom.pose.pose.orientation.w = math.cos(obs.pose.yaw / 2.0)
        odom.twist.twist.linear.x, odom.twist.twist.angular.z = obs.velocity
        self._odom_pub.publish(odom)

    def _publish_camera(self, stamp: Any) -> None:
        try:
            rgb = self._sim.render()
        except RenderingUnavailable as exc:
            self._camera_on = False
            self.get_logger().error(f"camera disabled: {exc}")
            return
        image = Image(**rgb_to_image_fields(rgb))
        image.header.stamp = stamp
        image.header.frame_id = self._camera_info.header.frame_id
        self._camera_info.header.stamp = stamp
        self._rgb_pub.publish(image)
        self._info_pub.publish(self._camera_info)


def main(args: list[str] | None = None) -> None:
    # SIGINT and SIGTERM end the process cleanly within 2 s (nvila_nav/nodes/process.py).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest("sim").install()
    node = None
    executor = None
    thread = None
    code = 0
    try:
        node = SimulatorNode()
        request.running()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread = spin_in_background(executor, "sim-executor")
        request.wait(thread)
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
