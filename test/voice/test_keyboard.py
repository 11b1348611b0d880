"""Keyboard fallback: lines typed on the node's stdin become instructions, "stop" stops."""

import io
import os
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import Collector, isolated_context, ros_graph, wait_for
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.nodes.voice_teleop import VoiceTeleopNode
from nvila_nav.voice.keyboard import KeyboardReader

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def test_reader_passes_non_empty_lines():
    lines = []
    reader = KeyboardReader(lines.append, io.StringIO("walk to the red chair\n\n  stop \n"))
    reader.start()
    assert wait_for(lambda: len(lines) == 2, 2.0)
    assert lines == ["walk to the red chair", "stop"]


@pytest.mark.ros
def test_typed_lines_drive_instruction_and_estop(ros_domain_id, monkeypatch, capsys):
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr("sys.stdin", os.fdopen(read_fd))
    with isolated_context(ros_domain_id) as context, ros_graph(context) as graph:
        probe = graph.node("probe")
        instructions = Collector(probe, String, "instruction")
        estop = Collector(probe, Bool, "e_stop", LATCHED)
        node = graph.add(
            VoiceTeleopNode(
                context=context,
                cli_args=["--ros-args", "-p", "audio_source:=none", "-p", "keyboard:=enabled"],
            )
        )
        resumes = []

        def resume(_request, response):
            resumes.append(time.monotonic())
            response.success = True
            return response

        probe.create_service(Trigger, "motion_controller/resume", resume)
        assert "Or type an instruction here" in capsys.readouterr().out
        assert wait_for(lambda: node.count_subscribers("instruction") > 0, 10.0)
        assert wait_for(node._resume_client.service_is_ready, 10.0)
        with os.fdopen(write_fd, "w") as keyboard:
            keyboard.write("Walk to the red chair.\n")
            keyboard.flush()
            assert instructions.wait_for(lambda m: m.data == "Walk to the red chair.", 5.0)
            keyboard.write("stop\n")
            keyboard.flush()
            assert estop.wait_for(lambda m: m.data, 5.0)
            keyboard.write("turn left\n")
            keyboard.flush()
            assert estop.wait_for(lambda m: not m.data, 5.0), "the e-stop was not released"
            assert instructions.wait_for(lambda m: m.data == "turn left", 5.0)
            # reset is not restart: the stop this node engaged is resumed explicitly
            assert wait_for(lambda: len(resumes) == 1, 5.0), "motion_controller/resume not called"
