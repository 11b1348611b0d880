"""Input QoS and an input monitor for the navigator: what a robot's drivers publish must be heard,
and what is not heard is said, naming the topic.

- `qos_profile(name)`: the profiles a parameter may choose. "sensor_data" (best effort, volatile,
  depth 5) hears best-effort and reliable publishers alike, as camera and odometry drivers
  publish either; "reliable" hears reliable publishers only (a best-effort publisher is then a
  QoS mismatch); "best_effort" is sensor_data with depth 10.
- `InputMonitor` watches subscriptions: a QoS-incompatible publisher (rclpy's event callback at
  once, and a graph check every period), a publisher of another message type, no publisher,
  and silence longer than a timeout. Each problem is logged naming the resolved topic and the
  peer, and repeated every `warn_period_s` while it lasts; `problems()` lists them for the
  diagnostics.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rclpy.qos import (
    DurabilityPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
    qos_profile_sensor_data,
)

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

QOS_CHOICES = ("sensor_data", "reliable", "best_effort")


def qos_profile(name: str) -> QoSProfile:
    """The subscription profile a `*_qos` parameter names (QOS_CHOICES)."""
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "best_effort":
        return QoSProfile(
            depth=10,
            reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
    if name == "reliable":
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    raise ValueError(f"unknown QoS {name!r}; one of {', '.join(QOS_CHOICES)}")


def _type_name(msg_type: Any) -> str:
    module = msg_type.__module__.split(".")[0]
    return f"{module}/msg/{msg_type.__name__}"


@dataclass
class _Watched:
    subscription: Any
    type_name: str
    silence_s: float | None
    hint: str
    expected_publisher: bool
    last_arrival: float | None = None
    incompatible_events: int = 0
    warned_at: dict[str, float] = field(default_factory=dict)


class InputMonitor:
    """See the module docstring. `check()` runs from a timer; `arrived()` from the callbacks."""

    def __init__(self, node: Any, warn_period_s: float = 10.0):
        self._node = node
        self._warn_period_s = warn_period_s
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}
        self._started = time.monotonic()
        self._problems: dict[str, str] = {}

    def events(self, key: str) -> Any:
        """Event callbacks for the subscription that `watch(key, ...)` will register."""
        return SubscriptionEventCallbacks(
            incompatible_qos=lambda info: self._on_incompatible(key, info)
        )

    def watch(
        self,
        key: str,
        subscription: Any,
        msg_type: Any,
        silence_s: float | None = None,
        hint: str = "",
        expected_publisher: bool = True,
    ) -> None:
        """Watch `subscription`; `silence_s`: warn when nothing arrived for this long (None:
        never); `expected_publisher`: warn when nothing publishes on the topic."""
        with self._lock:
            self._watched[key] = _Watched(
                subscription, _type_name(msg_type), silence_s, hint, expected_publisher
            )

    def forget(self, key: str) -> None:
        with self._lock:
            self._watched.pop(key, None)
            self._problems = {k: v for k, v in self._problems.items() if not k.startswith(key)}

    def arrived(self, key: str) -> None:
        with self._lock:
            watched = self._watched.get(key)
            if watched is not None:
                watched.last_arrival = time.monotonic()

    def _on_incompatible(self, key: str, info: Any) -> None:
        with self._lock:
            watched = self._watched.get(key)
            if watched is None:
                return
            watched.incompatible_events += 1
        policy = getattr(info, "last_policy_kind", "")
        name = getattr(policy, "name", str(policy))
        self._warn(
            key,
            "qos",
            f"QoS mismatch on {watched.subscription.topic_name}: a publisher's QoS is "
            f"incompatible with this subscription ({name}); nothing it publishes arrives. "
            f"{watched.hint}".rstrip(),
            force=True,
        )

    def problems(self) -> dict[str, str]:
        """The problems found by the last `check()`, {key/kind: message}."""
        with self._lock:
            return dict(self._problems)

    def check(self, silence_applies: bool = True) -> dict[str, str]:
        """Look at every watched topic; log what is wrong (at most once per period per problem).
        `silence_applies`: whether silence is a problem now (e.g. only while active)."""
        now = time.monotonic()
        with self._lock:
            watched = dict(self._watched)
        problems: dict[str, str] = {}
        for key, entry in watched.items():
            sub = entry.subscription
            topic = sub.topic_name
            try:
                publishers = self._node.get_publishers_info_by_topic(topic)
            except Exception:  # the node is going away
                return problems
            ours = [
                info.qos_profile
                for info in self._node.get_subscriptions_info_by_topic(topic)
                if info.node_name == self._node.get_name()
            ]
            heard = 0
            for info in publishers:
                peer = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                if info.topic_type != entry.type_name:
                    problems[f"{key}/type"] = (
                        f"{peer} publishes {info.topic_type} on {topic}, but this node expects "
                        f"{entry.type_name}: nothing it publishes arrives"
                    )
                    continue
                # this node may listen with several profiles: one that matches is enough
                checks = [qos_check_compatible(info.qos_profile, qos) for qos in ours]
                if checks and all(c == QoSCompatibility.ERROR for c, _ in checks):
                    problems[f"{key}/qos"] = (
                        f"QoS mismatch on {topic}: {peer} publishes "
                        f"{_describe(info.qos_profile)}, this node subscribes "
                        f"{' and '.join(_describe(qos) for qos in ours)} "
                        f"({checks[0][1].strip()}); nothing it publishes arrives. "
                        f"{entry.hint}".rstrip()
                    )
                    continue
                heard += 1
            if entry.expected_publisher and not publishers and silence_applies:
                problems[f"{key}/none"] = f"no publisher on {topic} (remapped to another name?)"
            if entry.silence_s is not None and silence_applies:
                since = entry.last_arrival if entry.last_arrival is not None else self._started
                silent = now - since
                if silent > entry.silence_s and heard:
                    problems[f"{key}/silent"] = (
                        f"nothing arrived on {topic} for {silent:.1f} s though {heard} "
                        f"publisher(s) match"
                    )
                elif silent > entry.silence_s and not publishers:
                    problems[f"{key}/none"] = (
                        f"nothing arrived on {topic} for {silent:.1f} s: no publisher "
                        "(driver down, or remapped to another name?)"
                    )
        with self._lock:
            self._problems = problems
        for problem_key, message in problems.items():
            self._warn(problem_key, "", message)
        return problems

    def _warn(self, key: str, kind: str, message: str, force: bool = False) -> None:
        now = time.monotonic()
        slot = f"{key}/{kind}" if kind else key
        with self._lock:
            entry = self._watched.get(key.split("/")[0])
            if entry is None:
                return
            last = entry.warned_at.get(slot)
            if not force and last is not None and now - last < self._warn_period_s:
                return
            entry.warned_at[slot] = now
        self._node.get_logger().warning(message)


def _describe(qos: QoSProfile) -> str:
    reliability = getattr(qos.reliability, "name", str(qos.reliability)).lower()
    durability = getattr(qos.durability, "name", str(qos.durability)).lower()
    return f"{reliability} + {durability}"


class ArrivalStats:
    """Percentiles of a stream of durations in milliseconds (camera arrival gaps, delivery
    delays), counted in 1 ms bins up to `limit_ms` (longer ones in the last bin, `max` exact):
    constant memory however long the node runs, cheap to update from a callback."""

    def __init__(self, limit_ms: int = 5000):
        self._bins = [0] * (limit_ms + 1)
        self._limit = limit_ms
        self.count = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        if not ms >= 0.0:  # negative or nan: not a duration
            return
        self._bins[min(int(ms), self._limit)] += 1
        self.count += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100), to 1 ms; None before any value."""
        if not self.count:
            return None
        rank = max(1, round(self.count * q / 100.0))
        seen = 0
        for ms, n in enumerate(self._bins):
            seen += n
            if seen >= rank:
                return float(min(ms, self.max_ms))
        return self.max_ms

    def summary(self) -> str:
        """Percentiles and maximum, e.g. "p50 33 p90 34 p99 41 max 52" (ms), or "none"."""
        if not self.count:
            return "none"
        parts = [f"p{q:g} {self.percentile(q):.0f}" for q in (50, 90, 99)]
        return " ".join([*parts, f"max {self.max_ms:.0f}"])
