"""Policies: NVILA on the tiny random model (text, timings, feature cache) and the expert oracle."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nvila_core.model.frame_head import FrameHead, fit_frame_head
from nvila_core.runtime.engine import Engine, TorchBackend
from nvila_nav.actions import ALL_ACTIONS, Action, ActionKind, parse_action
from nvila_nav.history import FrameHistory
from nvila_nav.landmark_side import (
    LANDMARK_SIDE_HEAD,
    LANDMARK_SIDE_PROMPT,
    NOT_IN_VIEW,
    SEARCH_AFTER_GOAL,
    SEARCH_TURN_DEG,
    SEARCH_TURNS,
    TARGET_STEPS,
)
from nvila_nav.policies import (
    ExpertPolicy,
    NVILAPolicy,
    PolicyRequest,
    PolicyUnavailable,
    choose_by_kind,
    decided_text,
    episode_from_message,
    make_policy,
    pad_frames,
)
from nvila_nav.sim.episodes import generate_episode
from nvila_nav.sim.navgrid import ROBOT_RADIUS
from nvila_nav.sim.world import world_for_scene
from nvila_nav.stop_reach import REACH_CONFIDENCE, STOP_REACH_HEAD, STOP_REACH_PROMPT
from nvila_nav.turn_side import (
    ROUTE_AHEAD_FRAMES,
    ROUTE_AHEAD_HEAD,
    ROUTE_AHEAD_PROMPT,
    TURN_SIDE_FRAMES,
    TURN_SIDE_HEAD,
    TURN_SIDE_PROMPT,
)
from test.helpers.compact_models import ScriptedAnswer, compact_model

INSTRUCTION = "Walk past the sofa and stop at the red door."


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained("tiny")


def request_from(history: FrameHistory) -> PolicyRequest:
    frames, keys = history.sample()
    return PolicyRequest(INSTRUCTION, pad_frames(frames), keys)


def test_pad_frames_substitutes_black_frames_of_the_current_size():
    current = np.full((5, 7, 3), 200, dtype=np.uint8)
    padded = pad_frames([None, None, current])
    assert [f.shape for f in padded] == [(5, 7, 3)] * 3
    assert not padded[0].any() and padded[2] is current
    with pytest.raises(ValueError, match="current"):
        pad_frames([current, None])


def test_nvila_policy_answers_with_timings_and_reuses_cached_frames(engine, make_frames):
    policy = NVILAPolicy(engine, max_new_tokens=8)
    assert policy.num_frames == 8
    frames = make_frames(9, height=48, width=64)
    history = FrameHistory(keep_rate_hz=2.0, capacity=64, num_frames=8)
    for i, frame in enumerate(frames[:8]):
        history.offer(frame, 0.5 * i)

    first = policy.decide(request_from(history))
    assert isinstance(first.text, str) and first.action == parse_action(first.text)
    assert first.latency_s > 0
    for key in ("vision_ms", "prefill_ms", "decode_tokens_per_s", "vit_passes"):
        assert key in first.timings
    assert first.timings["new_tokens"] <= 8
    assert first.timings["vit_passes"] == 8

    # The next step: 7 frames the model has seen, 1 new one -> one pass of the vision tower.
    history.offer(frames[8], 4.0)
    second = policy.decide(request_from(history))
    assert second.timings["vit_passes"] == 1 and second.timings["cached_frames"] == 7

    policy.reset()  # a new instruction: the cache starts empty
    assert policy.decide(request_from(history)).timings["vit_passes"] == 8


def test_nvila_policy_encodes_black_padding_once(engine, make_frames):
    policy = NVILAPolicy(engine, max_new_tokens=4)
    policy.reset()
    history = FrameHistory(keep_rate_hz=2.0, capacity=64, num_frames=8)
    for i, frame in enumerate(make_frames(3, height=48, width=64)):
        history.offer(frame, 0.5 * i)
    decision = policy.decide(request_from(history))
    assert decision.timings["vit_passes"] == 4  # 3 frames + one black frame for all 5 pads


def sim_episode_message(episode) -> dict:
    """The JSON the sim node publishes on sim/episode (nvila_nav/nodes/simulator.py)."""
    return {
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
        "start_time": 0.0,
        "load_count": 1,
    }


def test_episode_from_message_reads_both_forms():
    episode = generate_episode("val_unseen", 0, seed=0)
    from_sim = episode_from_message(sim_episode_message(episode))
    from_file = episode_from_message(episode.to_dict())
    for parsed in (from_sim, from_file):
        assert parsed.scene_id == episode.scene_id
        assert parsed.goal.position == episode.goal.position
        assert parsed.reference_path == episode.reference_path
        assert parsed.start_yaw == pytest.approx(episode.start_yaw)
    assert from_file.info["goal_landmark"] == episode.info["goal_landmark"]


@pytest.mark.parametrize("form", ["sim/episode", "R2R"])
def test_expert_policy_drives_a_val_unseen_episode_to_its_goal(form):
    episode = generate_episode("val_unseen", 1, seed=0)
    data = sim_episode_message(episode) if form == "sim/episode" else episode.to_dict()
    nav = world_for_scene(episode.scene_id).nav
    policy = ExpertPolicy()
    x, y, yaw = episode.start_position[0], episode.start_position[1], episode.start_yaw
    frames = [np.zeros((2, 2, 3), dtype=np.uint8)] * 8
    kinds = []
    for _ in range(300):
        decision = policy.decide(PolicyRequest(INSTRUCTION, frames, None, (x, y, yaw), data))
        assert parse_action(decision.text) == decision.action
        action = decision.action
        kinds.append(action.kind)
        if action.is_stop:
            break
        if action.kind is ActionKind.FORWARD:
            end = (x + action.distance_m * math.cos(yaw), y + action.distance_m * math.sin(yaw))
            assert nav.segment_clear((x, y), end, ROBOT_RADIUS), "the expert drove into an obstacle"
            x, y = end
        yaw += action.yaw_rad
    assert kinds[-1] is ActionKind.STOP
    goal = episode.goal.position
    assert math.hypot(x - goal[0], y - goal[1]) < 0.35
    assert kinds.count(ActionKind.FORWARD) >= 4


def test_expert_policy_says_what_it_is_missing():
    episode = generate_episode("val_unseen", 0, seed=0)
    frames = [np.zeros((2, 2, 3), dtype=np.uint8)] * 8
    policy = ExpertPolicy()
    with pytest.raises(PolicyUnavailable, match="sim/episode"):
        policy.decide(PolicyRequest(INSTRUCTION, frames, pose=(0.0, 0.0, 0.0)))
    with pytest.raises(PolicyUnavailable, match="odom"):
        policy.decide(PolicyRequest(INSTRUCTION, frames, episode=episode.to_dict()))
    matterport = {**sim_episode_message(episode), "scene_id": "mp3d/17DRP5sb8fy"}
    with pytest.raises(PolicyUnavailable, match="cannot plan"):
        policy.decide(PolicyRequest(INSTRUCTION, frames, pose=(0.0, 0.0, 0.0), episode=matterport))


def test_make_policy():
    assert isinstance(make_policy("expert"), ExpertPolicy)
    policy = make_policy("nvila", "tiny", device="cpu", cache_frames=16, max_new_tokens=5)
    assert isinstance(policy, NVILAPolicy)
    assert policy.engine.random_weights and policy.engine.frame_cache.max_frames == 16
    assert policy.max_new_tokens == 5
    policy.close()
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("oracle")


def test_random_policy_is_uniform_reproducible_and_differs_between_instructions():
    policy = make_policy("random", seed=3)
    frame = [np.zeros((4, 4, 3), np.uint8)]
    first = [policy.decide(PolicyRequest(INSTRUCTION, frame)).action for _ in range(2000)]
    counts = {a: first.count(a) for a in ALL_ACTIONS}
    assert set(counts) == set(ALL_ACTIONS) and min(counts.values()) > 2000 / 10 * 0.7
    policy.reset()  # the next instruction; the same one again replays the same sequence
    assert [policy.decide(PolicyRequest(INSTRUCTION, frame)).action for _ in range(50)] == first[
        :50
    ]
    policy.reset()
    other = [policy.decide(PolicyRequest("Go to the sofa.", frame)).action for _ in range(50)]
    assert other != first[:50]


def test_forward_policy_never_stops():
    policy = make_policy("forward")
    decision = policy.decide(PolicyRequest(INSTRUCTION, [np.zeros((4, 4, 3), np.uint8)]))
    assert decision.text == "The next action is move forward 75 cm."
    assert decision.action.kind is ActionKind.FORWARD and decision.action.amount == 75


def test_blank_frames_policy_gives_the_model_black_frames_only(engine, make_frames):
    frames = make_frames(8, height=48, width=64)
    engine.clear_cache()
    blind = NVILAPolicy(engine, max_new_tokens=6, blank_frames=True)
    seen = blind.decide(PolicyRequest(INSTRUCTION, frames, list(range(8))))
    again = blind.decide(PolicyRequest(INSTRUCTION, frames, list(range(8))))
    black = [np.zeros_like(f) for f in frames]
    reference = NVILAPolicy(engine, max_new_tokens=6).decide(PolicyRequest(INSTRUCTION, black))
    engine.clear_cache()
    assert seen.text == reference.text and again.text == reference.text


def test_choose_decoding_always_names_one_of_the_ten_actions(engine, make_frames):
    """The random tiny model never writes a parseable sentence; choosing still yields an action."""
    policy = NVILAPolicy(engine, decoding="choose")
    frames = make_frames(8, height=48, width=64)
    engine.clear_cache()
    for step in (1, 4, 8):
        decision = policy.decide(PolicyRequest(INSTRUCTION, pad_frames(frames[:step])))
        assert decision.action in ALL_ACTIONS
        assert decision.text == decision.action.to_answer()
        assert decision.timings["answers"] == len(ALL_ACTIONS)
    generated = NVILAPolicy(engine, max_new_tokens=12).decide(PolicyRequest(INSTRUCTION, frames))
    assert generated.action is None  # what choose replaces
    with pytest.raises(ValueError, match="decoding must be one of"):
        NVILAPolicy(engine, decoding="beam")


def test_a_statement_model_decides_after_its_statement(make_frames):
    """nav_statement: the decision's text shows the statement, its action is the choice."""
    model, config, tokenizer = compact_model(nav_statement=True)
    engine = Engine(TorchBackend(model), config, tokenizer)
    policy = NVILAPolicy(engine, decoding="choose_kind")
    frames = make_frames(3, height=48, width=64)
    decision = policy.decide(PolicyRequest(INSTRUCTION, frames))
    said = engine.navigate(INSTRUCTION, frames, answers=policy.answers).statement
    assert decision.action in ALL_ACTIONS
    assert decision.text == " ".join(t for t in (said, decision.action.to_text()) if t)
    assert decision.timings["statement_ms"] > 0 and "statement_missing" in decision.timings
    # what the statement says is never read as the action: "No." is not a negation of it
    said = "Close ahead: the red door. Is the blue chair close ahead? No."
    scripted = Engine(
        ScriptedAnswer(model, tokenizer, f"{said} move forward 50 cm"), config, tokenizer
    )
    for decoding in ("generate", "choose_kind"):
        decision = NVILAPolicy(scripted, decoding=decoding).decide(
            PolicyRequest(INSTRUCTION, frames)
        )
        assert decision.text.startswith(f"{said} ") and decision.action in ALL_ACTIONS
        assert decision.text == f"{said} {decision.action.to_text()}"
        if decoding == "generate":  # the generated action itself
            assert decision.action == parse_action("move forward 50 cm")


def test_choose_kind_decides_the_kind_before_the_amount(engine, make_frames):
    """Three turn amounts that together outweigh "move forward 75 cm" make a turn; the amount is
    the most probable within the kind; the policy answers with one of the ten answers."""
    scores = {"move forward 75 cm": 0.40, "move forward 50 cm": 0.02, "move forward 25 cm": 0.02}
    scores |= {"turn left 15 degrees": 0.12, "turn left 30 degrees": 0.14}
    scores |= {"turn left 45 degrees": 0.22, "stop": 0.02}
    rest = (1.0 - sum(scores.values())) / (len(ALL_ACTIONS) - len(scores))
    log_probs = [math.log(scores.get(a.to_text(), rest)) for a in ALL_ACTIONS]
    assert ALL_ACTIONS[max(range(len(ALL_ACTIONS)), key=log_probs.__getitem__)].to_text() == (
        "move forward 75 cm"
    )
    assert ALL_ACTIONS[choose_by_kind(log_probs)].to_text() == "turn left 45 degrees"
    # a clear single answer stays what plain choose picks
    assert ALL_ACTIONS[choose_by_kind([0.0] + [-9.0] * 9)] == ALL_ACTIONS[0]
    with pytest.raises(ValueError, match="expected 10 scores"):
        choose_by_kind([0.0, 0.0])

    policy = NVILAPolicy(engine, decoding="choose_kind")
    frames = make_frames(4, height=48, width=64)
    engine.clear_cache()
    decision = policy.decide(PolicyRequest(INSTRUCTION, pad_frames(frames)))
    assert decision.action in ALL_ACTIONS
    assert decision.text == decision.action.to_answer()
    generated = engine.navigate(INSTRUCTION, pad_frames(frames), max_new_tokens=4)
    assert decided_text(generated, None, by_kind=False) == generated.text
    with pytest.raises(ValueError, match="needs the scores"):
        decided_text(generated, policy.answers, by_kind=True)


def constant_head(
    features: int,
    answer: str,
    name: str = TURN_SIDE_HEAD,
    prompt: str = TURN_SIDE_PROMPT,
    answers: tuple[str, ...] = ("Left.", "Right."),
    logit: float = 1.0,
) -> FrameHead:
    """A frame head (by default the turn-side one) that answers `answer` whatever the frame
    shows, `logit` above the other answers."""
    net = torch.nn.Sequential(
        torch.nn.Linear(features, 4), torch.nn.ReLU(), torch.nn.Linear(4, len(answers))
    )
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.zero_()
            layer.bias.zero_()
        net[2].bias[answers.index(answer)] = logit
    return FrameHead(name, prompt, list(answers), torch.zeros(features), torch.ones(features), net)


def test_a_turn_side_head_gives_the_side_of_a_turn_after_a_move(make_frames):
    """With a turn-side head, where the executed actions end in a move, a turn the navigation
    query decided keeps its angle and takes the side the head reads from the current frame; any
    other decision, or a model without the head, is left as the query made it."""
    model, config, tokenizer = compact_model(nav_previous_actions=2)
    frames = make_frames(3, height=48, width=64)
    features = Engine(TorchBackend(model), config, tokenizer).frame_tokens(frames[-1]).numel()
    after_move = ("turn left 15 degrees", "move forward 75 cm")

    def policy(said, head_answer=None):
        engine = Engine(ScriptedAnswer(model, tokenizer, said), config, tokenizer)
        if head_answer is not None:
            engine.heads[TURN_SIDE_HEAD] = constant_head(features, head_answer)
        return NVILAPolicy(engine, decoding="generate")

    for said in ("turn left 30 degrees", "turn right 30 degrees"):
        for head_answer, side in (("Left.", Action.left), ("Right.", Action.right)):
            turner = policy(said, head_answer)
            decision = turner.decide(
                PolicyRequest(INSTRUCTION, frames, previous_actions=after_move)
            )
            assert decision.action == side(30) and decision.text == decision.action.to_text()
            assert decision.timings["turn_side_ms"] > 0
            assert decision.timings["turn_side_changed"] == int(parse_action(said) != side(30))
            for previous in ((), ("move forward 75 cm", "turn right 45 degrees")):
                kept = turner.decide(PolicyRequest(INSTRUCTION, frames, previous_actions=previous))
                assert kept.action == parse_action(said) and "turn_side_ms" not in kept.timings
        untaught = policy(said).decide(
            PolicyRequest(INSTRUCTION, frames, previous_actions=after_move)
        )
        assert untaught.action == parse_action(said) and "turn_side_ms" not in untaught.timings
    moved = policy("move forward 50 cm", "Left.").decide(
        PolicyRequest(INSTRUCTION, frames, previous_actions=after_move)
    )
    assert moved.action == Action.forward(50) and "turn_side_ms" not in moved.timings
    engine = Engine(TorchBackend(model), config, tokenizer)
    wrong = constant_head(features, "Left.")
    wrong.answers = ["Yes.", "No."]
    engine.heads[TURN_SIDE_HEAD] = wrong
    with pytest.raises(ValueError, match="turn_side head answers"):
        NVILAPolicy(engine)


def test_a_two_frame_turn_side_head_reads_the_decision_before_the_move(make_frames):
    """A turn-side head that reads two decision frames gets the view the previous decision was
    made on (the first decision's, where that was the first) and the current one: here a head
    that answers by the older frame alone (A: "Left.", B: "Right.") turns the robot to the side
    the view before the move says. A model whose history is not the recent one refuses it."""
    model, config, tokenizer = compact_model(nav_previous_actions=2)
    first, middle, current = make_frames(3, height=48, width=64)
    tokens = Engine(TorchBackend(model), config, tokenizer).frame_tokens
    a, b, c = (tokens(frame).reshape(-1) for frame in (first, middle, current))
    rows = [torch.cat(pair) for pair in ((a, c), (a, b), (b, c), (b, a))]
    head = fit_frame_head(
        TURN_SIDE_HEAD,
        TURN_SIDE_PROMPT,
        ["Left.", "Right."],
        torch.stack(rows),
        [0, 0, 1, 1],
        epochs=100,
        frames=2,
    )
    engine = Engine(ScriptedAnswer(model, tokenizer, "turn right 30 degrees"), config, tokenizer)
    engine.heads[TURN_SIDE_HEAD] = head
    policy = NVILAPolicy(engine, decoding="generate")
    frames = [first, middle, current]
    for previous, side in (
        (("move forward 75 cm",), Action.left(30)),  # decision 0's view: the first slot
        (("turn left 15 degrees", "move forward 75 cm"), Action.right(30)),  # decision 1's
    ):
        decision = policy.decide(PolicyRequest(INSTRUCTION, frames, previous_actions=previous))
        assert decision.action == side and decision.timings["turn_side_ms"] > 0
    navila_model, navila_config, _ = compact_model(nav_history="navila")
    engine = Engine(TorchBackend(navila_model), navila_config, tokenizer)
    engine.heads[TURN_SIDE_HEAD] = head
    with pytest.raises(ValueError, match="needs a recent-history model"):
        NVILAPolicy(engine)
    short_model, short_config, _ = compact_model(num_video_frames=2)
    engine = Engine(TorchBackend(short_model), short_config, tokenizer)
    engine.heads[TURN_SIDE_HEAD] = head
    with pytest.raises(ValueError, match="at least 3 frames, this one samples 2"):
        NVILAPolicy(engine)


def test_a_route_ahead_head_moves_on_where_a_turn_would_continue(make_frames):
    """With a route-ahead head, where the executed actions end in a turn, a turn the navigation
    query decided becomes "move forward 75 cm" when the head answers "Yes." and stays as it is
    on "No."; after a move, or for any other decision, the head is not asked."""
    model, config, tokenizer = compact_model(nav_previous_actions=2)
    frames = make_frames(3, height=48, width=64)
    features = Engine(TorchBackend(model), config, tokenizer).frame_tokens(frames[-1]).numel()
    after_turn = ("move forward 75 cm", "turn right 45 degrees")

    def policy(said, head_answer):
        engine = Engine(ScriptedAnswer(model, tokenizer, said), config, tokenizer)
        engine.heads[ROUTE_AHEAD_HEAD] = constant_head(
            features, head_answer, ROUTE_AHEAD_HEAD, ROUTE_AHEAD_PROMPT, ("Yes.", "No.")
        )
        return NVILAPolicy(engine, decoding="generate")

    for said in ("turn left 30 degrees", "turn right 45 degrees"):
        moved = policy(said, "Yes.").decide(
            PolicyRequest(INSTRUCTION, frames, previous_actions=after_turn)
        )
        assert moved.action == Action.forward(75) and moved.text == "move forward 75 cm"
        assert moved.timings["route_ahead_ms"] > 0 and moved.timings["route_ahead_changed"] == 1
        turning = policy(said, "No.")
        kept = turning.decide(PolicyRequest(INSTRUCTION, frames, previous_actions=after_turn))
        assert kept.action == parse_action(said) and kept.timings["route_ahead_changed"] == 0
        for previous in ((), ("turn left 15 degrees", "move forward 75 cm")):
            first = turning.decide(PolicyRequest(INSTRUCTION, frames, previous_actions=previous))
            assert first.action == parse_action(said) and "route_ahead_ms" not in first.timings
    stopped = policy("stop", "Yes.").decide(
        PolicyRequest(INSTRUCTION, frames, previous_actions=after_turn)
    )
    assert stopped.action == Action.stop() and "route_ahead_ms" not in stopped.timings
    engine = Engine(TorchBackend(model), config, tokenizer)
    engine.heads[ROUTE_AHEAD_HEAD] = constant_head(features, "Left.")
    with pytest.raises(ValueError, match="route_ahead head answers"):
        NVILAPolicy(engine)


def test_a_stop_reach_head_moves_on_where_a_stop_is_short(make_frames):
    """With a stop-reach head, a stop the navigation query decided becomes "move forward 25 cm"
    where the head answers "No." or a "Yes." less probable than REACH_CONFIDENCE (three times an
    episode at most; reset starts a new count) and stays a stop on a confident "Yes."; no other
    decision asks the head."""
    model, config, tokenizer = compact_model(nav_previous_actions=2)
    frames = make_frames(3, height=48, width=64)
    features = Engine(TorchBackend(model), config, tokenizer).frame_tokens(frames[-1]).numel()

    def policy(said, head_answer, logit=3.0):
        engine = Engine(ScriptedAnswer(model, tokenizer, said), config, tokenizer)
        engine.heads[STOP_REACH_HEAD] = constant_head(
            features, head_answer, STOP_REACH_HEAD, STOP_REACH_PROMPT, ("Yes.", "No."), logit
        )
        return NVILAPolicy(engine, decoding="generate")

    request = PolicyRequest(INSTRUCTION, frames, previous_actions=("move forward 75 cm",))
    short = policy("stop", "No.")
    for _ in range(2):  # two episodes
        for _ in range(3):
            moved = short.decide(request)
            assert moved.action == Action.forward(25) and moved.text == "move forward 25 cm"
            assert moved.timings["stop_reach_ms"] > 0 and moved.timings["stop_reach_changed"] == 1
        stopped = short.decide(request)
        assert stopped.action == Action.stop() and "stop_reach_ms" not in stopped.timings
        short.reset()
    reached = policy("stop", "Yes.").decide(request)  # "Yes." at 0.95
    assert reached.action == Action.stop() and reached.timings["stop_reach_changed"] == 0
    unsure = policy("stop", "Yes.", logit=1.0).decide(request)  # "Yes." at 0.73
    assert 1 / (1 + math.exp(-1.0)) < REACH_CONFIDENCE
    assert unsure.action == Action.forward(25) and unsure.timings["stop_reach_changed"] == 1
    for said in ("move forward 50 cm", "turn left 30 degrees"):
        kept = policy(said, "No.").decide(request)
        assert kept.action == parse_action(said) and "stop_reach_ms" not in kept.timings
    engine = Engine(TorchBackend(model), config, tokenizer)
    engine.heads[STOP_REACH_HEAD] = constant_head(features, "Left.")
    with pytest.raises(ValueError, match="stop_reach head answers"):
        NVILAPolicy(engine)


def named_head(features: int, sides: dict[str, tuple[str, float]]) -> FrameHead:
    """A landmark-side head that answers about each name of `sides` (answer, probability)
    whatever the frame shows."""
    names = sorted(sides)
    net = torch.nn.Sequential(
        torch.nn.Linear(features, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4 * len(names))
    )
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.zero_()
            layer.bias.zero_()
        for group, name in enumerate(names):
            answer, p = sides[name]
            # the answer's logit over three equal others: softmax gives it p
            net[2].bias[4 * group + LANDMARK_SIDE_ANSWERS.index(answer)] = math.log(3 * p / (1 - p))
    return FrameHead(
        LANDMARK_SIDE_HEAD,
        LANDMARK_SIDE_PROMPT,
        list(LANDMARK_SIDE_ANSWERS),
        torch.zeros(features),
        torch.ones(features),
        net,
        names=names,
    )


LANDMARK_SIDE_ANSWERS = ["Ahead.", "Left.", "Not in view.", "Right."]


def test_a_landmark_side_head_heads_for_the_route_s_next_landmark_in_view(make_frames):
    """With a landmark-side head, the decision heads for the doorway the instruction says to go
    through ("move forward 75 cm" where the head answers "Ahead.", the smallest turn toward it
    on "Left." / "Right."; the goal waits for it, in view or not), or, without one, for the goal
    the statement asks about; an answer below SIDE_CONFIDENCE (a doorway's: DOORWAY_CONFIDENCE)
    counts as not in view; TARGET_STEPS decisions a landmark at most (reset starts a new count);
    the goal close ahead, nothing in view, or the instruction's opening turn still to make leave
    the decision as the model made it."""
    model, config, tokenizer = compact_model(
        nav_previous_actions=2, nav_statement=True, nav_initial_turn="stated"
    )
    frames = make_frames(3, height=48, width=64)
    features = Engine(TorchBackend(model), config, tokenizer).frame_tokens(frames[-1]).numel()
    go = "Go through the blue doorway and stop at the red chair."
    door, chair = "the blue door", "the red chair"

    def policy(sides, seen="nothing", said="turn right 30 degrees"):
        statement = f"Close ahead: {seen}. Is the red chair close ahead? No."
        engine = Engine(ScriptedAnswer(model, tokenizer, f"{statement} {said}"), config, tokenizer)
        engine.heads[LANDMARK_SIDE_HEAD] = named_head(features, sides)
        return NVILAPolicy(engine, decoding="generate")

    request = PolicyRequest(go, frames, previous_actions=("move forward 75 cm",))
    no_door = "Walk ahead and stop at the red chair."
    out_of_view = ("Not in view.", 0.9)
    for sides, instruction, steer in (
        ({door: ("Ahead.", 0.9), chair: ("Left.", 0.9)}, go, Action.forward(75)),
        ({door: ("Left.", 0.55), chair: ("Right.", 0.9)}, go, Action.left(15)),
        ({door: out_of_view, chair: ("Right.", 0.9)}, no_door, Action.right(15)),
        ({chair: ("Left.", 0.65)}, no_door, Action.left(15)),
    ):
        decision = policy(sides).decide(dataclasses.replace(request, instruction=instruction))
        assert decision.action == steer and decision.text.endswith(f"? No. {steer.to_text()}")
        assert decision.timings["landmark_side_ms"] > 0 and decision.timings["route_changed"] == 1
    bounded = policy({door: ("Right.", 0.9), chair: out_of_view})
    for _ in range(2):  # two episodes
        for _ in range(TARGET_STEPS):
            assert bounded.decide(request).action == Action.right(15)
        assert bounded.decide(request).action == Action.right(30)
        bounded.reset()
    kept = policy({door: ("Right.", 0.9), chair: out_of_view}, said="turn right 15 degrees")
    assert kept.decide(request).timings["route_changed"] == 0
    for sides, seen, instruction, previous in (
        ({door: out_of_view, chair: out_of_view}, "nothing", go, ("move forward 75 cm",)),
        ({door: out_of_view, chair: ("Left.", 0.9)}, "nothing", go, ("move forward 75 cm",)),
        ({door: ("Left.", 0.45), chair: ("Left.", 0.5)}, "nothing", go, ("move forward 75 cm",)),
        ({chair: ("Ahead.", 0.9)}, chair, no_door, ("move forward 75 cm",)),
    ):
        decision = policy(sides, seen=seen).decide(
            PolicyRequest(instruction, frames, previous_actions=previous)
        )
        assert "route_changed" not in decision.timings and decision.action == Action.right(30)
    opening = policy({door: ("Ahead.", 0.9)}).decide(
        PolicyRequest("Turn left and go through the blue doorway.", frames,
                      previous_actions=("turn left 30 degrees",))
    )  # fmt: skip
    assert "route_changed" not in opening.timings and opening.action.kind is ActionKind.TURN_LEFT
    turned = policy({door: ("Ahead.", 0.9)}).decide(
        PolicyRequest("Turn left and go through the blue doorway.", frames,
                      previous_actions=("turn left 45 degrees",))
    )  # fmt: skip
    assert turned.action == Action.forward(75) and turned.timings["route_changed"] == 1
    engine = Engine(TorchBackend(model), config, tokenizer)
    engine.heads[LANDMARK_SIDE_HEAD] = constant_head(features, "Left.", LANDMARK_SIDE_HEAD)
    with pytest.raises(ValueError, match="landmark_side head answers"):
        NVILAPolicy(engine)


def test_a_landmark_side_head_looks_around_for_a_goal_long_out_of_view(make_frames):
    """Where the goal has been out of view for SEARCH_AFTER_GOAL decisions, the policy's
    decisions become the look-around's 45-degree turns (left: it was never seen on a side)
    until the head sees it; the statement saying it is close ahead leaves the model's stop."""
    model, config, tokenizer = compact_model(nav_previous_actions=2, nav_statement=True)
    frames = make_frames(3, height=48, width=64)
    features = Engine(TorchBackend(model), config, tokenizer).frame_tokens(frames[-1]).numel()
    chair = "the red chair"

    def policy(answer, seen="nothing", said="move forward 75 cm"):
        verdict = "Yes." if seen == chair else "No."
        statement = f"Close ahead: {seen}. Is the red chair close ahead? {verdict}"
        engine = Engine(ScriptedAnswer(model, tokenizer, f"{statement} {said}"), config, tokenizer)
        engine.heads[LANDMARK_SIDE_HEAD] = named_head(features, {chair: answer})
        return NVILAPolicy(engine, decoding="generate")

    request = PolicyRequest(
        "Walk ahead and stop at the red chair.", frames, previous_actions=("move forward 75 cm",)
    )
    lost = policy(("Not in view.", 0.9))
    actions = [lost.decide(request).action for _ in range(SEARCH_AFTER_GOAL + SEARCH_TURNS)]
    assert actions[: SEARCH_AFTER_GOAL - 1] == [Action.forward(75)] * (SEARCH_AFTER_GOAL - 1)
    assert actions[SEARCH_AFTER_GOAL - 1 :] == [Action.left(SEARCH_TURN_DEG)] * SEARCH_TURNS + [
        Action.forward(75)
    ]
    # close ahead by the statement: never a look-around, the model's stop stands
    reached = policy(("Not in view.", 0.9), seen=chair, said="stop")
    for _ in range(SEARCH_AFTER_GOAL + 1):
        decision = reached.decide(request)
        assert decision.action == Action.stop() and "route_changed" not in decision.timings


def test_a_stated_initial_turn_model_keeps_the_first_turn_to_the_instruction(make_frames):
    """With nav_initial_turn: stated, the decisions before the first move stay on the side and
    within the range the instruction's opening words state; the same model with "model", or
    an instruction that opens with no turn, decides as it said."""
    model, config, tokenizer = compact_model(nav_previous_actions=2, nav_initial_turn="stated")
    frames = make_frames(3, height=48, width=64)

    def decide(said, instruction, previous, **changes):
        cfg = dataclasses.replace(config, **changes)
        engine = Engine(ScriptedAnswer(model, tokenizer, said), cfg, tokenizer)
        request = PolicyRequest(instruction, frames, previous_actions=previous)
        return NVILAPolicy(engine, decoding="generate").decide(request)

    around = "Turn around to your left. Stop at the red door."
    turned = decide("move forward 75 cm", around, ())
    assert turned.action == Action.left(45) and turned.text == "turn left 45 degrees"
    assert turned.timings["initial_turn_changed"] == 1
    sided = decide("turn right 30 degrees", around, ("turn left 45 degrees",))
    assert sided.action == Action.left(30)
    three = ("turn left 45 degrees",) * 3
    kept = decide("move forward 75 cm", around, three)
    assert kept.action == Action.forward(75) and kept.timings["initial_turn_changed"] == 0
    ended = decide(
        "turn left 45 degrees", around, (*three, "turn left 45 degrees", "turn left 15 degrees")
    )
    assert ended.action == Action.forward(75)
    moved = decide("turn right 45 degrees", around, ("turn left 45 degrees", "move forward 75 cm"))
    assert moved.action == Action.right(45)
    for unchanged in (
        decide("move forward 75 cm", around, (), nav_initial_turn="model"),
        decide("move forward 75 cm", INSTRUCTION, ()),
    ):
        assert unchanged.action == Action.forward(75)
        assert "initial_turn_changed" not in unchanged.timings


NANO = Path(__file__).resolve().parents[1] / "models" / "navila-nano"


@pytest.mark.skipif(not (NANO / "config.json").is_file(), reason="models/navila-nano is absent")
def test_navila_nano_fits_in_30_mb():
    """The shipped folder stays small enough to live in git: weights, heads, tokenizer, card."""
    assert sum(f.stat().st_size for f in NANO.rglob("*") if f.is_file()) <= 30_000_000


@pytest.mark.skipif(not (NANO / "config.json").is_file(), reason="models/navila-nano is absent")
def test_navila_nano_ships_the_frame_heads_its_policy_uses(make_frames):
    engine = Engine.from_pretrained(NANO)
    frame = make_frames(1, height=96, width=128)[0]
    for name, prompt, answers, frames in (
        (TURN_SIDE_HEAD, TURN_SIDE_PROMPT, ["Left.", "Right."], TURN_SIDE_FRAMES),
        (ROUTE_AHEAD_HEAD, ROUTE_AHEAD_PROMPT, ["No.", "Yes."], ROUTE_AHEAD_FRAMES),
        (STOP_REACH_HEAD, STOP_REACH_PROMPT, ["No.", "Yes."], 1),
        (LANDMARK_SIDE_HEAD, LANDMARK_SIDE_PROMPT, LANDMARK_SIDE_ANSWERS, 1),
    ):
        head = engine.heads[name]
        assert sorted(head.answers) == answers and head.prompt == prompt
        assert head.frames == frames == prompt.count("<image>")
        assert head.num_features == frames * engine.frame_tokens(frame).numel()
        assert head.info["val_accuracy"] > head.info["val_majority"] + 0.05
    policy = NVILAPolicy(engine, decoding="choose_kind")
    assert policy.turn_side and policy.route_ahead and policy.stop_reach and policy.initial_turn
    assert policy.route_guide and "the blue door" in engine.heads[LANDMARK_SIDE_HEAD].names
    # the landmark-side head looks for each name at every token, "Not in view." its absence
    landmark = engine.heads[LANDMARK_SIDE_HEAD]
    assert landmark.layout == "tokens" and landmark.answers[landmark.net.absent] == NOT_IN_VIEW
    # ... on tokens of its own tuned vision, shaped as the model's, which stay as they are
    assert landmark.vision is not None
    own, seen = engine.frame_tokens(frame), engine.head_frame_tokens(landmark, frame)
    assert seen.shape == own.shape and not torch.allclose(seen, own, atol=1e-3)
