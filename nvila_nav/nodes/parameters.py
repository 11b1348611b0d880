"""Declaring node parameters from one table, each with a descriptor (type, range, read-only, text).

Every node lists its parameters as `ParameterSpec`s; the same table documents them, is checked
against `config/<node>.yaml` by the tests, and is what `declare_all` hands to rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: name, default (its type is the parameter's type), description, constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    min_value: float | int | None = None
    max_value: float | int | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        kind = type(self.default)
        if kind not in _TYPES:
            raise TypeError(f"parameter {self.name}: unsupported type {kind.__name__}")
        constraints = f"one of: {', '.join(self.choices)}" if self.choices else ""
        descriptor = ParameterDescriptor(
            name=self.name,
            type=_TYPES[kind],
            description=self.description,
            additional_constraints=constraints,
            read_only=self.read_only,
        )
        if self.min_value is not None or self.max_value is not None:
            low = self.min_value if self.min_value is not None else -1e18
            high = self.max_value if self.max_value is not None else 1e18
            if kind is float:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
                ]
            elif kind is int:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(low), to_value=int(high), step=0)
                ]
        return descriptor


def declare_all(node: Node, specs: tuple[ParameterSpec, ...]) -> dict[str, Any]:
    """Declare every spec on `node` and return the values in force (YAML/launch overrides applied).

    Choice-constrained strings are checked here, since ROS descriptors cannot express them.
    """
    values = {}
    for spec in specs:
        value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        if spec.choices and value not in spec.choices:
            raise ValueError(
                f"parameter {spec.name}={value!r} is not one of {', '.join(spec.choices)}"
            )
        values[spec.name] = value
    return values
