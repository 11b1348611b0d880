"""Fixtures for tests that run real rclpy and Fast DDS on loopback (never mocks of ROS)."""

import os

import pytest

rclpy = pytest.importorskip("rclpy")

# Keep discovery on this machine: tests must never send DDS traffic beyond loopback.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def unique_domain_id(offset: int = 0) -> int:
    """A DDS domain per test process so parallel or repeated runs never see each other."""
    return 1 + (os.getpid() + offset) % 100


@pytest.fixture
def ros_domain_id(request) -> int:
    return unique_domain_id(hash(request.node.nodeid) % 50)


@pytest.fixture
def ros_context(ros_domain_id):
    """A private rclpy context on its own domain; shut down after the test."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
