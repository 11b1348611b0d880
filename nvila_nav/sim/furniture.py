"""Landmark kinds and colours: what each piece of furniture looks like and how big it is.

Every landmark is a handful of primitive geoms in a local frame whose +x is the side a person
faces it from (the "front"); its back stands against a wall. Shapes are deliberately simple and
saturated so that a 224×224 frame still shows which kind and which colour it is.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[float, float, float]

COLOURS: dict[str, RGB] = {
    "red": (0.80, 0.08, 0.08),
    "green": (0.12, 0.58, 0.18),
    "blue": (0.10, 0.28, 0.85),
    "yellow": (0.95, 0.82, 0.08),
    "orange": (0.98, 0.48, 0.05),
    "purple": (0.48, 0.16, 0.66),
    "pink": (0.98, 0.50, 0.72),
    "black": (0.07, 0.07, 0.08),
}

_WOOD: RGB = (0.42, 0.27, 0.14)
_WHITE: RGB = (0.95, 0.95, 0.93)
_LEAF: RGB = (0.20, 0.50, 0.16)
_BOOKS: tuple[RGB, ...] = ((0.85, 0.80, 0.65), (0.35, 0.35, 0.40), (0.70, 0.25, 0.20))


@dataclass(frozen=True)
class Part:
    """One primitive geom: MuJoCo type, centre in the landmark frame, MuJoCo size, colour."""

    shape: str
    pos: tuple[float, float, float]
    size: tuple[float, ...]
    rgb: RGB


@dataclass(frozen=True)
class Kind:
    """A landmark kind: footprint half extents (depth along +x, width along y) and nouns."""

    name: str
    half_depth: float
    half_width: float
    nouns: tuple[str, ...]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("chair", 0.25, 0.25, ("chair",)),
        Kind("table", 0.40, 0.60, ("table",)),
        Kind("sofa", 0.45, 1.00, ("sofa", "couch")),
        Kind("bed", 1.00, 0.75, ("bed",)),
        Kind("plant", 0.25, 0.25, ("potted plant", "plant")),
        Kind("shelf", 0.20, 0.50, ("shelf", "bookshelf")),
        Kind("box", 0.30, 0.30, ("box", "crate")),
        Kind("door", 0.10, 0.60, ("door", "doorway")),
    )
}
"""Door frames are landmarks too; their geometry is built around the doorway by the world."""


def _shade(rgb: RGB, factor: float) -> RGB:
    return tuple(min(1.0, c * factor) for c in rgb)  # type: ignore[return-value]


def _legs(hx: float, hy: float, height: float, rgb: RGB, inset: float = 0.04) -> list[Part]:
    return [
        Part(
            "box",
            (sx * (hx - inset), sy * (hy - inset), height / 2),
            (0.025, 0.025, height / 2),
            rgb,
        )
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]


def parts(kind: str, rgb: RGB) -> list[Part]:
    """Geoms of one landmark of `kind` painted `rgb` (door frames are built by the world)."""
    dark = _shade(rgb, 0.7)
    if kind == "chair":
        return [
            Part("box", (0.0, 0.0, 0.46), (0.23, 0.23, 0.03), rgb),
            Part("box", (-0.21, 0.0, 0.75), (0.03, 0.23, 0.27), rgb),
            *_legs(0.23, 0.23, 0.43, dark),
        ]
    if kind == "table":
        return [
            Part("box", (0.0, 0.0, 0.74), (0.40, 0.60, 0.03), rgb),
            *_legs(0.40, 0.60, 0.71, dark),
        ]
    if kind == "sofa":
        return [
            Part("box", (0.05, 0.0, 0.22), (0.40, 0.90, 0.22), rgb),
            Part("box", (-0.33, 0.0, 0.45), (0.12, 0.90, 0.45), dark),
            Part("box", (0.0, 0.92, 0.32), (0.45, 0.08, 0.32), dark),
            Part("box", (0.0, -0.92, 0.32), (0.45, 0.08, 0.32), dark),
        ]
    if kind == "bed":
        return [
            Part("box", (0.0, 0.0, 0.15), (1.00, 0.75, 0.15), _WOOD),
            Part("box", (0.0, 0.0, 0.36), (0.97, 0.72, 0.06), _WHITE),
            Part("box", (0.25, 0.0, 0.44), (0.74, 0.76, 0.04), rgb),
            Part("box", (-0.75, 0.0, 0.47), (0.14, 0.55, 0.06), _WHITE),
            Part("box", (-0.97, 0.0, 0.55), (0.04, 0.76, 0.55), dark),
        ]
    if kind == "plant":
        return [
            Part("cylinder", (0.0, 0.0, 0.22), (0.22, 0.22), rgb),
            Part("cylinder", (0.0, 0.0, 0.55), (0.03, 0.15), _WOOD),
            Part("ellipsoid", (0.0, 0.0, 0.95), (0.32, 0.32, 0.40), _LEAF),
        ]
    if kind == "shelf":
        boards = [Part("box", (0.0, 0.0, z), (0.19, 0.48, 0.02), rgb) for z in (0.05, 0.6, 1.15)]
        books = [
            Part("box", (0.0, -0.25 + 0.25 * i, z + 0.2), (0.14, 0.1, 0.18), _BOOKS[(i + j) % 3])
            for j, z in enumerate((0.07, 0.62, 1.17))
            for i in range(3)
            if (i + j) % 2 == 0
        ]
        return [
            Part("box", (0.0, -0.48, 0.9), (0.2, 0.02, 0.9), rgb),
            Part("box", (0.0, 0.48, 0.9), (0.2, 0.02, 0.9), rgb),
            Part("box", (0.0, 0.0, 1.78), (0.2, 0.5, 0.02), rgb),
            Part("box", (-0.19, 0.0, 0.9), (0.01, 0.48, 0.9), dark),
            *boards,
            *books,
        ]
    if kind == "box":
        return [
            Part("box", (0.0, 0.0, 0.3), (0.3, 0.3, 0.3), rgb),
            Part("box", (0.0, 0.0, 0.6), (0.31, 0.31, 0.015), dark),
            Part("box", (0.02, 0.05, 0.8), (0.18, 0.18, 0.18), rgb),
        ]
    raise ValueError(f"no geometry recipe for landmark kind {kind!r}")


def height(kind: str) -> float:
    """Top of the landmark above the floor (m), for the collision proxy."""
    return {"chair": 1.0, "table": 0.77, "sofa": 0.9, "bed": 1.1, "plant": 1.35, "shelf": 1.8}.get(
        kind, 0.98
    )
