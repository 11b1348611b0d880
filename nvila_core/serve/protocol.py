"""NaVILA-Bench's VLM protocol and reply parser, byte for byte (no torch, no model code).

NaVILA-Bench's evaluator (scripts/navila_eval.py) asks a VLM server for every mid-level action:

- TCP, one request and one reply per connection (default port 54321).
- Request: an 8-byte big-endian unsigned length, then that many bytes of UTF-8 JSON
  ``{"images": [8 strings], "query": text}``. Each image is a standard-alphabet, padded base64
  JPEG of an RGB camera frame, oldest first, the current frame last. A history shorter than 8
  frames is padded with black frames in front; a longer one is sampled at ``int(i*(n-1)/7)``
  for i in 0..6, plus the newest frame. ``query`` is the raw instruction.
- Reply: an 8-byte big-endian length, then ``json.dumps(text)``: a JSON string.
- The client turns the reply into a velocity command by substring tests (`bench_command`, the
  same tests in the same order); text that matches none of them silently becomes "forward
  0.5 s" (25 cm), and an empty or non-string reply ends the evaluation with an exception.

`canonical_answer` maps model text onto the ten grammar sentences, each of which the client's
parser maps through an explicit branch; the server only ever replies with one of them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 54321
HEADER_BYTES = 8
NUM_IMAGES = 8
"""Frames per request: 7 sampled history frames and the current one."""
FRAME_SIZE = 512
"""NaVILA-Bench's camera frames are 512x512 RGB."""

ANSWER_PREFIX = "The next action is "
FORWARD_CM = (25, 50, 75)
TURN_DEG = (15, 30, 45)
FORWARD_SPEED = 0.5
"""m/s of NaVILA-Bench's forward command."""
TURN_RATE = math.pi / 6.0
"""rad/s of NaVILA-Bench's turn commands."""


def action_phrases() -> tuple[str, ...]:
    """The ten action phrases, as NaVILA's training targets spell them."""
    return (
        *(f"move forward {cm} cm" for cm in FORWARD_CM),
        *(f"turn left {deg} degrees" for deg in TURN_DEG),
        *(f"turn right {deg} degrees" for deg in TURN_DEG),
        "stop",
    )


def answer_sentence(phrase: str) -> str:
    """ "move forward 75 cm" -> "The next action is move forward 75 cm." """
    return f"{ANSWER_PREFIX}{phrase}."


def answer_phrase(sentence: str) -> str:
    """The phrase of a grammar sentence (inverse of `answer_sentence`)."""
    if not (sentence.startswith(ANSWER_PREFIX) and sentence.endswith(".")):
        raise ValueError(f"not a grammar sentence: {sentence!r}")
    return sentence[len(ANSWER_PREFIX) : -1]


ANSWERS: tuple[str, ...] = tuple(answer_sentence(p) for p in action_phrases())
"""The only replies the server sends."""
STOP_ANSWER = answer_sentence("stop")
DEFAULT_FALLBACK = answer_sentence("turn left 15 degrees")
"""The answer when the model gives none. Not "stop": NaVILA-Bench ends the episode on stop and
scores it (a failure unless the robot happens to be at the goal), so a model glitch would end
the run. Not "move forward": that is the client's own silent default and the only action that
can drive into something. A 15-degree turn in place touches nothing, shows the model a new
view and keeps the episode going; the episode's action limit still bounds a model that never
answers. A robot that must halt on any doubt can choose stop (`--fallback stop`)."""


# ---------------------------------------------------------------- the client's parser
@dataclass(frozen=True)
class BenchCommand:
    """What NaVILA-Bench's `get_vel_command` makes of a reply: a body velocity command
    (vx m/s, vy m/s, wz rad/s) held for `duration_s`, which branch matched, and whether the text
    only got there through the final catch-all (`default` True: the silent forward 25 cm)."""

    velocity: tuple[float, float, float]
    duration_s: float
    branch: str
    default: bool = False

    @property
    def is_stop(self) -> bool:
        return self.branch == "stop"


def bench_command(text: str) -> BenchCommand:
    """NaVILA-Bench's reply parser (eval_utils.get_vel_command), test for test.

    The amount tests are substring tests on the whole text ("45" anywhere), and a recognised
    kind without a known amount gets 0.5 s: both as in the original.
    """
    low = text.lower()
    for side, rate in (("turn left", TURN_RATE), ("turn right", -TURN_RATE)):
        if side in low:
            return BenchCommand((0.0, 0.0, rate), _amount_s(low, TURN_DEG), side)
    if "move forward" in low or "move" in low:
        return BenchCommand((FORWARD_SPEED, 0.0, 0.0), _amount_s(low, FORWARD_CM), "move forward")
    if "stop" in low:
        return BenchCommand((0.0, 0.0, 0.0), 0.0, "stop")
    return BenchCommand((FORWARD_SPEED, 0.0, 0.0), 0.5, "default", default=True)


def _amount_s(low: str, amounts: tuple[int, int, int]) -> float:
    _smallest, middle, large = amounts
    if str(large) in low:
        return 1.5
    if str(middle) in low:
        return 1.0
    return 0.5  # the smallest amount, or no known amount at all


# ---------------------------------------------------------------- model text -> grammar
_NUMBER = r"(\d+(?:\.\d+)?)"
_STOP = re.compile(r"\bstop\b", re.IGNORECASE)
_PREFIXED = (
    ("move forward", re.compile(r"\bis\s+move\s+forward\b", re.IGNORECASE)),
    ("turn left", re.compile(r"\bis\s+turn\s+left\b", re.IGNORECASE)),
    ("turn right", re.compile(r"\bis\s+turn\s+right\b", re.IGNORECASE)),
)
_BARE = re.compile(r"\b(move\s+forward|turn\s+left|turn\s+right)\b", re.IGNORECASE)
_FORWARD_AMOUNT = re.compile(
    rf"move\s+forward\s+{_NUMBER}\s*(cm|centimet(?:er|re)s?|m|met(?:er|re)s?)\b", re.IGNORECASE
)
_TURN_AMOUNT = {
    side: re.compile(rf"turn\s+{side.split()[1]}\s+{_NUMBER}\s*(?:degree|deg|°)", re.IGNORECASE)
    for side in ("turn left", "turn right")
}


# A negated movement ("do not move forward") is never an action; a bare "stop" still is.
_NEGATION = re.compile(
    r"\b(?:not|no|never|without|avoid|cannot|dont|doesnt|shouldnt|mustnt)\b|n['\u2019]t\b",
    re.IGNORECASE,
)
# The number-like token after the action phrase: signed, decimal or exponent, nan, infinity.
_SIGNED_AMOUNT = re.compile(
    r"(?:move\s+forward|turn\s+(?:left|right))\s+"
    r"([-+\u2212]\s*\d+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|[-+]?inf(?:inity)?)"
    r"(?=\s|°|[a-z]|$)",
    re.IGNORECASE,
)


def _meaningless_amount(text: str) -> bool:
    """The amount after the action phrase is negative, zero, NaN or infinite."""
    match = _SIGNED_AMOUNT.search(text)
    if match is None:
        return False
    try:
        value = float(match.group(1).replace("\u2212", "-").replace(" ", ""))
    except ValueError:
        return False
    return not math.isfinite(value) or value <= 0


def _snap(value: float, allowed: tuple[int, ...]) -> int:
    """Nearest allowed amount; ties go to the smaller one."""
    return min(allowed, key=lambda a: abs(a - value))


def canonical_answer(text: str) -> str | None:
    """The grammar sentence model text names, or None when it names no action.

    NaVILA's Habitat parser: case-insensitive, a standalone "stop" wins, then "is move forward"
    / "is turn left" / "is turn right"; the bare phrase is accepted too (the earliest wins),
    amounts snap to the nearest grammar value and a missing amount is the smallest one. It
    never guesses: "stop" comes out only when the text says stop, and a negated movement ("do
    not move forward") or one with a negative, zero or non-finite amount names no action.
    """
    if _STOP.search(text):
        return STOP_ANSWER
    if _NEGATION.search(text) or _meaningless_amount(text):
        return None
    kind = next((k for k, pattern in _PREFIXED if pattern.search(text)), None)
    if kind is None:
        bare = _BARE.search(text)
        if bare is None:
            return None
        kind = " ".join(bare.group(1).lower().split())
    if kind == "move forward":
        match = _FORWARD_AMOUNT.search(text)
        cm = FORWARD_CM[0]
        if match is not None:
            value = float(match.group(1))
            cm = _snap(
                value if match.group(2).lower().startswith("c") else value * 100.0, FORWARD_CM
            )
        return answer_sentence(f"move forward {cm} cm")
    match = _TURN_AMOUNT[kind].search(text)
    deg = TURN_DEG[0] if match is None else _snap(float(match.group(1)), TURN_DEG)
    return answer_sentence(f"{kind} {deg} degrees")


# ---------------------------------------------------------------- framing
class RequestError(ValueError):
    """A request that does not follow the protocol; the message is the logged reason."""


def frame(payload: bytes) -> bytes:
    """`payload` behind its 8-byte big-endian length."""
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


def encode_reply(text: str) -> bytes:
    """A framed reply: json.dumps(text), UTF-8."""
    return frame(json.dumps(text).encode())


def encode_jpeg(image: Any) -> str:
    """Base64 of a JPEG of an RGB image (PIL image or HxWx3 uint8 array), encoded exactly as
    NaVILA-Bench's client does: PIL's JPEG defaults, standard padded base64."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def sample_indices(num_frames: int) -> list[int]:
    """Which of `num_frames` (>= 8, padding included) frames the client sends."""
    return [int(i * (num_frames - 1) / 7) for i in range(7)] + [num_frames - 1]


def encode_request(images: list[Any], query: str, extra: dict[str, Any] | None = None) -> bytes:
    """A framed request as NaVILA-Bench's `sample_images_and_send_to_vlm` builds it from the
    episode's frames so far (PIL images or arrays, oldest first): black padding in front up to
    8, the 7 sampled history frames and the newest one, JPEG + base64. `extra` adds keys to the
    JSON (the original client sends none; the servers here ignore unknown keys)."""
    from PIL import Image

    if not images:
        raise ValueError("no frames to send")
    frames = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
    if len(frames) < NUM_IMAGES:
        black = Image.new("RGB", frames[-1].size, (0, 0, 0))
        frames = [black] * (NUM_IMAGES - len(frames)) + frames
    sampled = [frames[i] for i in sample_indices(len(frames))]
    body: dict[str, Any] = {"images": [encode_jpeg(f) for f in sampled], "query": query}
    body.update(extra or {})
    return frame(json.dumps(body).encode())


@dataclass
class BenchRequest:
    """A validated request: the frames' base64 texts (as sent), the query, any other keys,
    and, once the server decoded them, the frames as PIL RGB images."""

    images_b64: list[str]
    query: str
    extra: dict[str, Any] = field(default_factory=dict)
    images: list[Any] = field(default_factory=list)
    peer: str = ""

    @property
    def padding(self) -> int:
        """Black padding frames in front: the leading copies of a black first frame (the
        client pads with identical black JPEGs); never the current frame."""
        if not self.images or not _is_black(self.images[0]):
            return 0
        count = 1
        while count < len(self.images_b64) - 1 and self.images_b64[count] == self.images_b64[0]:
            count += 1
        return min(count, len(self.images_b64) - 1)


def _is_black(image: Any) -> bool:
    return image.getbbox() is None  # every band of every pixel is 0


def parse_request(body: bytes, max_images: int = NUM_IMAGES) -> BenchRequest:
    """Validate a request body (JSON object with 1..max_images base64 strings and a string
    query); raises RequestError with the reason. Images are checked as base64 here and
    decoded by `decode_images`."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RequestError(f"body is not UTF-8: {err}") from None
    except json.JSONDecodeError as err:
        raise RequestError(f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError(f"body is a JSON {type(data).__name__}, not an object")
    images, query = data.get("images"), data.get("query")
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise RequestError('"images" must be a list of base64 strings')
    if not 1 <= len(images) <= max_images:
        raise RequestError(f'"images" holds {len(images)} frames, expected 1..{max_images}')
    if not isinstance(query, str) or not query.strip():
        raise RequestError('"query" must be a non-empty string')
    extra = {k: v for k, v in data.items() if k not in ("images", "query")}
    return BenchRequest(images_b64=images, query=query, extra=extra)


def decode_images(request: BenchRequest, max_pixels: int) -> None:
    """Decode the request's frames into RGB PIL images (request.images); RequestError when one
    is not base64, not a JPEG/PNG image, or larger than `max_pixels` (checked before pixels
    are decompressed, so a small file cannot claim gigabytes)."""
    from PIL import Image, UnidentifiedImageError

    decoded = []
    for index, text in enumerate(request.images_b64):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise RequestError(f"image {index}: not base64 ({err})") from None
        try:
            with Image.open(io.BytesIO(raw)) as image:
                if image.format not in ("JPEG", "PNG"):
                    raise RequestError(f"image {index}: {image.format} is not JPEG or PNG")
                width, height = image.size
                if width < 1 or height < 1 or width * height > max_pixels:
                    raise RequestError(
                        f"image {index}: {width}x{height} exceeds {max_pixels} pixels"
                    )
                decoded.append(image.convert("RGB"))
        except RequestError:
            raise
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            raise RequestError(f"image {index}: cannot decode ({err})") from None
        except Exception as err:  # PIL plugins raise SyntaxError, ValueError, ... on bad files
            raise RequestError(
                f"image {index}: cannot decode ({type(err).__name__}: {err})"
            ) from None
    request.images = decoded
