"""Shortest-path expert speaking NaVILA's mid-level action language.

At every decision the expert looks at the odometry pose and the goal's cost-to-go field on the
navigation grid, and emits one action: a turn of 15/30/45° toward the best heading, a forward move
of 25/50/75 cm that the grid says is collision-free, or, once within STOP_DISTANCE of the goal,
turn to face the goal landmark and stop. Each action is executed as in NaVILA's Isaac evaluation
(navila.md §1.5): a constant 0.5 m/s or π/6 rad/s command for 0.5/1.0/1.5 s of sim time. Frames
are taken every 1/frame_hz s of sim time, so at the default 2 Hz every decision has a frame taken
at that very instant and every 25 cm / 15° of motion adds one frame, as in NaVILA's training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nvila_nav.actions import FORWARD_CM, TURN_DEG, Action, ActionKind, quantize_turn
from nvila_nav.sim.episodes import SUCCESS_RADIUS, Episode
from nvila_nav.sim.geometry import Pose, polyline_length, wrap_angle
from nvila_nav.sim.navgrid import ROBOT_RADIUS, Approach
from nvila_nav.sim.robot import CameraConfig
from nvila_nav.sim.sight import landmarks_close_ahead
from nvila_nav.sim.world import World

if TYPE_CHECKING:
    # Type-only: planning needs no MuJoCo, so a navigator can import the expert without it.
    from nvila_nav.sim.env import Observation, Simulator

FORWARD_SPEED = 0.5
TURN_RATE = math.pi / 6
CONTROL_DT = 0.05
"""Command/odometry period (s) while an action runs; frames and trajectory are sampled on it."""
STOP_DISTANCE = 0.3
"""The expert stops within this distance (m) of the goal point, well inside SUCCESS_RADIUS."""
_TURN_CHARGE = 0.04
"""Cost-to-go (m) a 15° turn must save to be worth it; keeps the expert from zig-zagging."""
_MOVE_CLEARANCE = ROBOT_RADIUS + 0.03
_ESCAPE_CLEARANCE = ROBOT_RADIUS - 0.1
"""Last resort for a robot already pressed against an obstacle: the sphere slides along it."""
HYSTERESIS = 0.85
"""Straight on wins while it gains this share of the best move's cost-to-go drop."""


@dataclass(frozen=True)
class ActionStep:
    """One decision: sim time, the expert's action (the training label), the frame current at that
    time, the pose, and the action actually executed when a perturbation replaced the label."""

    t: float
    action: Action
    frame_index: int
    pose: Pose
    executed: Action | None = None


@dataclass
class ExpertRun:
    """Everything an expert rollout produced; frames are empty when rendering was off."""

    episode: Episode
    frame_hz: float
    actions: list[ActionStep] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    frame_poses: list[Pose] = field(default_factory=list)
    trajectory: list[tuple[float, float, float, float]] = field(default_factory=list)
    stopped: bool = False
    decision_frames: bool = False
    """True: one frame per decision (frame_index of action i is i), not frames at frame_hz."""

    @property
    def final_pose(self) -> Pose:
        _, x, y, yaw = self.trajectory[-1]
        return Pose(x, y, yaw)

    @property
    def distance_to_goal(self) -> float:
        g = self.episode.goal.position
        p = self.final_pose
        return math.hypot(p.x - g[0], p.y - g[1])

    @property
    def success(self) -> bool:
        """VLN-CE success: stopped, within the goal radius (Euclidean here)."""
        radius = self.episode.goal.radius or 3.0
        return self.stopped and self.distance_to_goal < radius

    @property
    def path_length(self) -> float:
        return polyline_length([(x, y) for _, x, y, _ in self.trajectory])


def in_stop_band(world: World, episode: Episode, pose: Pose, band: float, hfov_deg: float) -> bool:
    """Whether the landmark `episode` names is close ahead at `pose` (in view of a camera with
    `hfov_deg`, within `sight.CLOSE_AHEAD`) and its goal point within `band` m: where an expert
    with that stop band stops (`Expert`)."""
    g = episode.goal.position
    name = episode.info.get("goal_landmark")
    return math.dist((pose.x, pose.y), (g[0], g[1])) <= band and name in landmarks_close_ahead(
        world, pose, hfov_deg
    )


class Expert:
    """Decides the next mid-level action for one episode from the current pose.

    The robot can only face headings on its own 15° lattice (yaw + k·15°). For every lattice
    heading and every forward amount whose straight segment is collision-free, the endpoint's
    cost-to-go on the navigation grid is looked up; the best heading, with a small charge per 15°
    of turning, wins. The expert then turns toward that heading and moves.

    Its labels are meant to follow from what a model is given (frames, instruction, previous
    actions), not from the map alone:
    - heading hysteresis: straight on wins while it gains HYSTERESIS of the best move's drop in
      cost-to-go, so sub-15° heading offsets that no frame shows do not trigger corrections;
    - the instruction's initial turn: the first turn goes to the side the instruction states
      (`info["initial_turn_deg"]`), also the long way round when it says so;
    - defined everywhere: off the route's corridor the cost field leads back towards it, and
      away from the goal the expert never says "stop" (a blocked robot turns).
    """

    def __init__(
        self,
        sim: Simulator | World,
        episode: Episode,
        approach: bool = False,
        stop_distance: float = STOP_DISTANCE,
        stop_band: float | None = None,
        hfov_deg: float = CameraConfig.hfov_deg,
    ) -> None:
        """`sim` is the simulator (it loads the episode's scene) or just the scene's `World`:
        planning needs the navigation grid and landmarks, not a MuJoCo model or a renderer.
        `approach`: come in towards the named landmark (`_approach`; docs/simulator.md).
        `stop_distance`: face the landmark and stop within this distance (m) of the goal point;
        DAgger labels with a wider band than the rollouts' so that a learner's stop anywhere
        well inside the success radius is labelled "stop", not "walk on".
        `stop_band`: also stop, as it stands, where the named landmark is close ahead (in view
        of a camera with `hfov_deg`, within `sight.CLOSE_AHEAD`: what a statement's "Yes." says)
        and the goal point within this distance (m). Then "stop" follows from what the frame
        shows, instead of from one spot 0.3 m from the goal that no frame tells apart from the
        approach to it."""
        radius = episode.goal.radius or SUCCESS_RADIUS
        for name, value in (("stop_distance", stop_distance), ("stop_band", stop_band)):
            if value is not None and not 0.0 < value < radius:
                raise ValueError(
                    f"{name} must be in (0, {radius}) m (the goal radius), got {value}"
                )
        self.stop_distance = stop_distance
        self.stop_band = stop_band
        self.hfov_deg = hfov_deg
        if isinstance(sim, World):
            world = sim
            if world.scene_id != episode.scene_id:
                raise ValueError(f"world {world.scene_id} is not the episode's {episode.scene_id}")
        else:
            world = sim.load_scene(episode.scene_id)
        self.world = world
        self.episode = episode
        self.nav = world.nav
        g = episode.goal.position
        self.goal = (g[0], g[1])
        corridor = [p[:2] for p in episode.reference_path] or None
        self._plan: tuple[float, float, float, int] | None = None
        name = episode.info.get("goal_landmark")
        names = {lm.name for lm in world.landmarks}
        self.look_at = (world.landmark(name).x, world.landmark(name).y) if name in names else None
        cone = self._approach() if approach else None
        self.field = self.nav.distance_field(self.goal, corridor, cone)
        stated = float(episode.info.get("initial_turn_deg") or 0.0)
        self.initial_side = 0 if stated == 0.0 else (1 if stated > 0 else -1)
        self._decisions = 0
        self._start = (episode.start_position[0], episode.start_position[1])

    def _approach(self) -> Approach | None:
        """Come in towards the named landmark: the last metres of the way then show it ahead,
        growing until the stop, instead of the robot arriving beside it and turning to it."""
        if self.look_at is None:
            return None
        dx, dy = self.goal[0] - self.look_at[0], self.goal[1] - self.look_at[1]
        norm = math.hypot(dx, dy)
        return Approach((dx / norm, dy / norm)) if norm > 1e-6 else None

    def next_action(self, pose: Pose) -> Action:
        first = self._decisions == 0
        self._decisions += 1
        if self.in_stop_band(pose):
            return Action.stop()
        if math.dist((pose.x, pose.y), self.goal) <= self.stop_distance:
            # Face the named landmark before stopping, so the last frame shows what "stop next to
            # the red sofa" refers to.
            if self.look_at is not None:
                error = wrap_angle(
                    math.atan2(self.look_at[1] - pose.y, self.look_at[0] - pose.x) - pose.yaw
                )
                if abs(error) > math.radians(7.5):
                    return quantize_turn(error)[0]
            return Action.stop()
        plan = self._plan
        if plan is None or math.dist((pose.x, pose.y), plan[:2]) > 0.02:
            side = self.initial_side if first else 0
            plan = self._choose(pose, side)
            if plan is None:
                return self._unstick(pose)
        self._plan = plan
        error = wrap_angle(plan[2] - pose.yaw)
        if abs(error) > math.radians(7.5):
            if (
                math.dist((pose.x, pose.y), self._start) < 0.1
                and self.initial_side
                and abs(error) > math.radians(90)
                and error * self.initial_side < 0
            ):
                # The instruction said which way round: go that way, the long way if need be.
                return Action.left(45) if self.initial_side > 0 else Action.right(45)
            return quantize_turn(error)[0]
        self._plan = None
        return Action.forward(plan[3])

    def in_stop_band(self, pose: Pose) -> bool:
        """Whether `stop_band` makes the expert stop at `pose`."""
        return self.stop_band is not None and in_stop_band(
            self.world, self.episode, pose, self.stop_band, self.hfov_deg
        )

    def _choose(self, pose: Pose, side: int = 0) -> tuple[float, float, float, int] | None:
        """Commit to (x, y, heading, cm): kept while turning in place, so the robot never dithers
        on the odd sub-degree heading error a turn leaves behind. `side` (+1 left, -1 right)
        restricts the heading to that side of the current one when any such move exists."""
        for clearance in (_MOVE_CLEARANCE, ROBOT_RADIUS, _ESCAPE_CLEARANCE):
            choice = None
            if side:
                choice = self._best_move(pose, clearance, side)
            choice = choice or self._best_move(pose, clearance)
            if choice is not None:
                k, cm = choice
                return (pose.x, pose.y, pose.yaw + math.radians(15 * k), cm)
        return None

    def _best_move(self, pose: Pose, clearance: float, side: int = 0) -> tuple[int, int] | None:
        """(lattice step k, forward cm) that makes progress, by endpoint cost-to-go plus turn
        charge, with heading hysteresis in favour of k = 0."""
        here = (pose.x, pose.y)
        here_cost = self.field.at(*here)
        best, best_score, best_cost = None, math.inf, math.inf
        straight, straight_cost = None, math.inf
        steps = range(-11, 13) if not side else (range(1, 12) if side > 0 else range(-11, 0))
        for k in steps:
            yaw = pose.yaw + math.radians(15 * k)
            c, s = math.cos(yaw), math.sin(yaw)
            for cm in FORWARD_CM[::-1]:
                end = (here[0] + c * cm / 100, here[1] + s * cm / 100)
                if not self.nav.segment_clear(here, end, clearance):
                    continue
                # A clear segment also clears every shorter one along it.
                for shorter in (a for a in FORWARD_CM if a <= cm):
                    d = shorter / 100
                    cost = self.field.at(here[0] + c * d, here[1] + s * d)
                    if cost >= here_cost - 0.01:
                        continue
                    score = cost + _TURN_CHARGE * abs(k)
                    if score < best_score - 1e-9:
                        best, best_score, best_cost = (k, shorter), score, cost
                    if k == 0 and cost < straight_cost:
                        straight, straight_cost = (0, shorter), cost
                break
        if straight is not None and here_cost - straight_cost >= HYSTERESIS * (
            here_cost - best_cost
        ):
            return straight
        return best

    def _unstick(self, pose: Pose) -> Action:
        """No clear move makes progress (pressed against a wall or furniture): turn towards the
        heading whose first 25 cm lowers the cost-to-go most, never "stop" away from the goal."""
        here = (pose.x, pose.y)
        best_k = min(
            (k for k in range(-11, 13) if k != 0),
            key=lambda k: (
                self.field.at(
                    here[0] + 0.25 * math.cos(pose.yaw + math.radians(15 * k)),
                    here[1] + 0.25 * math.sin(pose.yaw + math.radians(15 * k)),
                ),
                abs(k),
            ),
        )
        return quantize_turn(math.radians(15 * best_k))[0]


class FrameRecorder:
    """Steps the simulator in CONTROL_DT ticks, rendering exactly on the frame clock, or, with
    `decision_frames`, only at each decision (one frame per action: what a "recent" history
    model is shown, at a fraction of the rendering and disk cost)."""

    def __init__(
        self, sim: Simulator, run: ExpertRun, render: bool, decision_frames: bool = False
    ) -> None:
        self.sim = sim
        self.run = run
        self.render = render
        self.decision_frames = decision_frames
        self.ticks_per_frame = round(1.0 / (run.frame_hz * CONTROL_DT))
        if abs(self.ticks_per_frame * CONTROL_DT * run.frame_hz - 1.0) > 1e-9:
            raise ValueError(f"frame_hz must divide {1 / CONTROL_DT:g} Hz, got {run.frame_hz}")
        self.tick = 0

    def record(self, obs: Observation) -> None:
        p = obs.pose
        self.run.trajectory.append((obs.time, p.x, p.y, p.yaw))
        if not self.decision_frames and self.tick % self.ticks_per_frame == 0:
            self._keep_frame(obs.time, p, obs.rgb)

    def decision(self) -> int:
        """Index of the frame a decision taken now sees (rendered now with decision_frames)."""
        if self.decision_frames:
            rgb = self.sim.render() if self.render else None
            self._keep_frame(self.sim.time, self.sim.pose, rgb)
        return len(self.run.frame_times) - 1

    def _keep_frame(self, t: float, pose: Pose, rgb: np.ndarray | None) -> None:
        self.run.frame_times.append(t)
        self.run.frame_poses.append(pose)
        if rgb is not None:
            self.run.frames.append(rgb)

    def execute(self, action: Action) -> None:
        if action.kind is ActionKind.FORWARD:
            vx, wz, duration = FORWARD_SPEED, 0.0, action.distance_m / FORWARD_SPEED
        else:
            vx, wz = 0.0, math.copysign(TURN_RATE, action.yaw_rad)
            duration = abs(action.yaw_rad) / TURN_RATE
        for _ in range(round(duration / CONTROL_DT)):
            self.tick += 1
            frame_due = not self.decision_frames and self.tick % self.ticks_per_frame == 0
            self.record(self.sim.step(vx, wz, CONTROL_DT, render=self.render and frame_due))


PERTURBATIONS = (
    *(Action.left(d) for d in TURN_DEG),
    *(Action.right(d) for d in TURN_DEG),
    *(Action.forward(cm) for cm in FORWARD_CM[:2]),
)
"""What a perturbed step executes instead of the expert's action: any turn, a short move."""


def run_expert(
    sim: Simulator,
    episode: Episode,
    render: bool = True,
    frame_hz: float = 2.0,
    max_actions: int = 400,
    perturb: float = 0.0,
    seed: int = 0,
    decision_frames: bool = False,
    approach: bool = False,
    stop_band: float | None = None,
) -> ExpertRun:
    """Drive `episode` with the expert; render=False runs physics only (no OpenGL needed).

    perturb > 0 executes, with that probability per non-stop step, a random action from
    PERTURBATIONS instead of the expert's while still recording the expert's as the label (DART,
    Laskey et al. 2017): a model trained only on perfect paths never sees how to recover from
    its own mistakes, and a learnt policy makes mistakes. Perturbed runs may fail to reach the goal
    (the step budget is raised) but every label is still the expert's best action in that state.
    decision_frames: one frame per decision instead of frames at `frame_hz`.
    approach: the expert comes in towards the named landmark (`Expert`).
    stop_band: the expert also stops where the named landmark is close ahead within this
    distance (m) of the goal point (`Expert`).
    """
    if not 0.0 <= perturb < 1.0:
        raise ValueError(f"perturb must be in [0, 1), got {perturb}")
    rng = np.random.default_rng(seed)
    run = ExpertRun(episode=episode, frame_hz=frame_hz, decision_frames=decision_frames)
    recorder = FrameRecorder(sim, run, render, decision_frames)
    recorder.record(sim.reset(episode, render=render and not decision_frames))
    expert = Expert(sim, episode, approach, stop_band=stop_band, hfov_deg=sim.camera.hfov_deg)
    for _ in range(max_actions):
        pose = sim.pose
        action = expert.next_action(pose)
        executed = None
        if not action.is_stop and perturb > 0.0 and rng.random() < perturb:
            executed = PERTURBATIONS[rng.integers(len(PERTURBATIONS))]
            if executed == action:
                executed = None
        frame = recorder.decision()
        run.actions.append(ActionStep(sim.time, action, frame, pose, executed))
        if action.is_stop:
            run.stopped = True
            break
        recorder.execute(executed or action)
    return run
