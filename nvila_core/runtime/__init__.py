"""Runtime: the `Engine` the robot calls, its execution backends and the per-frame feature cache."""

from nvila_core.runtime.engine import (
    BACKENDS,
    Backend,
    Engine,
    FrameFeatureCache,
    TorchBackend,
    make_backend,
)

__all__ = ["BACKENDS", "Backend", "Engine", "FrameFeatureCache", "TorchBackend", "make_backend"]
