"""Helpers every node shares: callbacks that never raise into the executor, odometry yaw."""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable
from typing import Any


def logged(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Log and drop a callback's failure, so a bad message never raises into the executor."""

    @functools.wraps(callback)
    def guarded(self, *args: Any) -> Any:
        try:
            return callback(self, *args)
        except Exception:
            self.get_logger().error(
                f"{callback.__name__} failed, input dropped:\n{traceback.format_exc()}"
            )
            return None

    return guarded


def quaternion_yaw(q: Any) -> float:
    """Yaw of a quaternion (REP 103); this form does not need the quaternion to be normalised."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), q.w * q.w + q.x * q.x - q.y * q.y - q.z * q.z)
