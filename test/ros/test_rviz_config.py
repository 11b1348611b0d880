"""config/rviz/nvila_nav.rviz shows topics the graph really publishes, with matching types.

The .rviz file is YAML; every display with a topic must name a topic that the sim_eval graph's
nodes (sim, navigator, motion_controller, started as bringup starts them, on real rclpy) publish
with the message type the display draws, and whose QoS the display can receive. Its fixed frame
is the odometry's own frame, so the odometry shows without TF (the embedded simulator publishes
none); the navigator's goal and markers are in the odometry's child frame, the one transform
(odom -> base_link) that docs/ros_interfaces.md says a robot must provide."""

from pathlib import Path

import pytest
import yaml
from nav_msgs.msg import Odometry
from ros_harness import Collector, isolated_context, ros_graph, wait_for

from nvila_nav.nodes.bringup import GRAPHS, create_node, write_params_file
from nvila_nav.sim.episodes import generate_episodes, write_episodes

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).parents[2] / "config"
RVIZ = CONFIG / "rviz" / "nvila_nav.rviz"
DISPLAY_TYPES = {
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Pose": "geometry_msgs/msg/PoseStamped",
    "rviz_default_plugins/Odometry": "nav_msgs/msg/Odometry",
}


def displays() -> list[dict]:
    config = yaml.safe_load(RVIZ.read_text())
    return config["Visualization Manager"]["Displays"]


def fixed_frame() -> str:
    config = yaml.safe_load(RVIZ.read_text())
    return config["Visualization Manager"]["Global Options"]["Fixed Frame"]


def node_parameters(name: str) -> dict:
    """The parameters config/<name>.yaml ships, which the launch files load."""
    return yaml.safe_load((CONFIG / f"{name}.yaml").read_text())[name]["ros__parameters"]


def test_rviz_config_names_the_navigator_camera_and_odometry():
    topics = {d["Topic"]["Value"]: d["Class"] for d in displays() if "Topic" in d}
    assert topics == {
        "rgb": "rviz_default_plugins/Image",
        "navigator/markers": "rviz_default_plugins/MarkerArray",
        "action_goal": "rviz_default_plugins/Pose",
        "odom": "rviz_default_plugins/Odometry",
    }


def test_rviz_fixed_frame_is_the_odometry_frame():
    """The odometry is drawn in its own frame (no TF); the navigator's outputs are in the
    odometry's child frame, which TF odom -> base_link connects on a robot."""
    sim = node_parameters("sim")
    assert fixed_frame() == sim["odom_frame_id"] == "odom"
    assert node_parameters("navigator")["base_frame"] == sim["base_frame_id"] == "base_link"


def test_every_rviz_topic_is_published_by_the_graph_with_its_type(ros_domain_id, tmp_path):
    graph_spec = GRAPHS["sim_eval"]
    specs = [s for s in graph_spec.nodes if s.name in ("navigator", "sim", "motion_controller")]
    # one episode, so that the sim publishes odometry (it is silent while idle)
    episodes = write_episodes(tmp_path / "e.json.gz", generate_episodes("val_unseen", 1, seed=0))
    params = write_params_file(
        {"navigator": {"policy": "forward"}, "sim": {"episodes_file": str(episodes)}},
        tmp_path / "p.yaml",
    )
    with isolated_context(ros_domain_id) as context, ros_graph(context) as graph:
        for spec in specs:
            node = graph.add(create_node(spec, graph_spec, context, [params]))
            if spec.lifecycle:
                node.trigger_configure()
                node.trigger_activate()
        probe = graph.node("probe")
        wanted = {"/" + d["Topic"]["Value"]: d for d in displays() if "Topic" in d}

        def published() -> dict[str, list[str]]:
            return {
                name: types
                for name, types in probe.get_topic_names_and_types()
                if name in wanted and probe.get_publishers_info_by_topic(name)
            }

        assert wait_for(lambda: set(published()) == set(wanted), 10.0), published()
        # the frames RViz resolves: odometry in the fixed frame itself (drawn without TF), the
        # navigator's goal in the odometry's child frame (drawn through TF odom -> base_link)
        odom = Collector(probe, Odometry, "/odom")
        first = odom.wait_for(lambda _: True, 10.0)
        assert first is not None, "no odometry"
        assert first[1].header.frame_id == fixed_frame()
        assert first[1].child_frame_id == node_parameters("navigator")["base_frame"]
        for topic, display in wanted.items():
            assert published()[topic] == [DISPLAY_TYPES[display["Class"]]], topic
            for info in probe.get_publishers_info_by_topic(topic):
                # a best-effort display receives from any publisher; a reliable one needs a
                # reliable publisher
                if display["Topic"]["Reliability Policy"] == "Reliable":
                    assert info.qos_profile.reliability.name == "RELIABLE", topic
