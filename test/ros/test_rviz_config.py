"""config/rviz/nvila_nav.rviz shows topics the graph really publishes, with matching types.

The .rviz file is YAML; every display with a topic must name a topic that the sim_eval graph's
nodes (sim, navigator, motion_controller, started as bringup starts them, on real rclpy) publish
with the message type the display draws, and whose QoS the display can receive."""

from pathlib import Path

import pytest
import yaml
from ros_harness import isolated_context, ros_graph, wait_for

from nvila_nav.nodes.bringup import GRAPHS, create_node, write_params_file

pytestmark = pytest.mark.ros

RVIZ = Path(__file__).parents[2] / "config" / "rviz" / "nvila_nav.rviz"
DISPLAY_TYPES = {
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Pose": "geometry_msgs/msg/PoseStamped",
    "rviz_default_plugins/Odometry": "nav_msgs/msg/Odometry",
}


def displays() -> list[dict]:
    config = yaml.safe_load(RVIZ.read_text())
    return config["Visualization Manager"]["Displays"]


def test_rviz_config_names_the_navigator_camera_and_odometry():
    topics = {d["Topic"]["Value"]: d["Class"] for d in displays() if "Topic" in d}
    assert topics == {
        "rgb": "rviz_default_plugins/Image",
        "navigator/markers": "rviz_default_plugins/MarkerArray",
        "action_goal": "rviz_default_plugins/Pose",
        "odom": "rviz_default_plugins/Odometry",
    }
    global_options = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Global Options"]
    assert global_options["Fixed Frame"] == "base_link"  # the navigator's marker/goal frame


def test_every_rviz_topic_is_published_by_the_graph_with_its_type(ros_domain_id, tmp_path):
    graph_spec = GRAPHS["sim_eval"]
    specs = [s for s in graph_spec.nodes if s.name in ("navigator", "sim", "motion_controller")]
    params = write_params_file({"navigator": {"policy": "forward"}}, tmp_path / "p.yaml")
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
        for topic, display in wanted.items():
            assert published()[topic] == [DISPLAY_TYPES[display["Class"]]], topic
            for info in probe.get_publishers_info_by_topic(topic):
                # a best-effort display receives from any publisher; a reliable one needs a
                # reliable publisher
                if display["Topic"]["Reliability Policy"] == "Reliable":
                    assert info.qos_profile.reliability.name == "RELIABLE", topic
