"""`nvila-core serve`: NaVILA-Bench's client played byte for byte against the server.

The client here is written from NaVILA-Bench's navila_eval.py behaviour, independently of
nvila_core.serve.protocol's encoder: PIL black frames padded in front, history sampled at
int(i*(n-1)/7) plus the newest, PIL JPEG + standard base64, json.dumps, the length and the body
in two sendall calls, one recv(8) for the header, recv(4096) until the body is complete, then
json.loads and the substring parser. Broken requests (not JSON, wrong fields, bad images,
oversized, truncated, slow, empty) must be rejected without the server dying, and the server
must serve a normal request afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from nvila_core.serve.protocol import (
    ANSWERS,
    STOP_ANSWER,
    BenchRequest,
    bench_command,
    canonical_answer,
    encode_request,
    sample_indices,
)
from nvila_core.serve.server import DEFAULT_FALLBACK, BenchServer, ServerConfig

INSTRUCTION = "Walk past the sofa, turn left into the kitchen and stop next to the fridge."


# ---------------------------------------------------------------- NaVILA-Bench's client
def bench_client_payload(frames: list[Image.Image], query: str) -> bytes:
    image_list = list(frames)
    if len(image_list) < 8:
        for _ in range(8 - len(image_list)):
            image_list.insert(0, Image.new("RGB", image_list[-1].size, (0, 0, 0)))
    n = len(image_list)
    sampled = [image_list[int(i * (n - 1) / 7)] for i in range(7)] + [image_list[-1]]
    encoded = []
    for image in sampled:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    return json.dumps({"images": encoded, "query": query}).encode()


def bench_client_ask(port: int, frames: list[Image.Image], query: str):
    data = bench_client_payload(frames, query)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.connect(("127.0.0.1", port))
        s.sendall(len(data).to_bytes(8, "big"))
        s.sendall(data)
        size = int.from_bytes(s.recv(8), "big")
        response = b""
        while len(response) < size:
            packet = s.recv(4096)
            if not packet:
                break
            response += packet
        return json.loads(response.decode())


def frames_of(count: int, seed: int = 0, size: int = 512) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)
    ]


# ---------------------------------------------------------------- responders
class ScriptedResponder:
    """Answers with the next text of a script (a callable may raise instead); records what it
    was asked."""

    name = "scripted"

    def __init__(self, script: list[object]):
        self.script = list(script)
        self.requests: list[BenchRequest] = []
        self.replies: list[str] = []

    def respond(self, request: BenchRequest):
        self.requests.append(request)
        item = self.script.pop(0) if self.script else "The next action is stop."
        if isinstance(item, BaseException):
            raise item
        return item

    def record_reply(self, request: BenchRequest, reply: str) -> None:
        self.replies.append(reply)


@pytest.fixture
def serve():
    """serve(responder, **config) -> running BenchServer on a free loopback port."""
    started: list[tuple[BenchServer, threading.Thread]] = []

    def start(responder, **config) -> BenchServer:
        server = BenchServer(responder, ServerConfig(host="127.0.0.1", port=0, **config))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive()


def raw_exchange(port: int, payload: bytes, *, half_close: bool = True, wait_s: float = 10.0):
    """Send raw bytes; return the reply bytes (b"" when the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server closed first (refused or rejected unread)
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# ---------------------------------------------------------------- the parser and the grammar
def test_every_server_answer_takes_an_explicit_branch_of_the_bench_parser():
    expected = {
        "move forward": [(0.5, 0.0, 0.0)] * 3,
        "turn left": [(0.0, 0.0, np.pi / 6)] * 3,
        "turn right": [(0.0, 0.0, -np.pi / 6)] * 3,
    }
    durations = []
    for answer in ANSWERS:
        command = bench_command(answer)
        assert not command.default, answer
        durations.append(command.duration_s)
        if command.is_stop:
            assert answer == STOP_ANSWER and command.velocity == (0.0, 0.0, 0.0)
        else:
            assert command.velocity == pytest.approx(expected[command.branch][0])
    assert durations == [0.5, 1.0, 1.5] * 3 + [0.0]


@pytest.mark.parametrize(
    ("text", "branch", "duration", "default"),
    [
        ("The next action is turn left 30 degrees.", "turn left", 1.0, False),
        ("TURN RIGHT please", "turn right", 0.5, False),  # no known amount: 0.5 s
        ("move to the door", "move forward", 0.5, False),  # "move" alone
        ("The next action is move forward 75 cm.", "move forward", 1.5, False),
        ("I will stop here.", "stop", 0.0, False),
        ("Go to the kitchen.", "default", 0.5, True),  # the silent forward 25 cm
        ("", "default", 0.5, True),
        ("turn left 45 or move forward 75", "turn left", 1.5, False),  # tests in order
    ],
)
def test_bench_parser_is_navila_benchs_substring_tests(text, branch, duration, default):
    command = bench_command(text)
    assert (command.branch, command.duration_s, command.default) == (branch, duration, default)


def test_canonical_answer_agrees_with_the_navigators_parser():
    from nvila_nav.actions import parse_action

    texts = [
        *ANSWERS,
        "move forward 1 m",
        "turn left 20 degrees",
        "Turn Right",
        "the next action is move forward",
        "I think I should stop now",
        "do not move forward 75 cm",
        "move forward -25 cm",
        "turn left nan degrees",
        "Go to the kitchen.",
        "",
        "move forward 50 cm then turn left 45 degrees",
    ]
    for text in texts:
        action = parse_action(text)
        assert canonical_answer(text) == (None if action is None else action.to_answer()), text


def test_the_bench_encoder_matches_navila_benchs_client():
    frames = frames_of(11, seed=3, size=64)
    assert sample_indices(11) == [int(i * 10 / 7) for i in range(7)] + [10]
    framed = encode_request(frames, INSTRUCTION)
    body = bench_client_payload(frames, INSTRUCTION)
    assert framed == len(body).to_bytes(8, "big") + body
    short = frames_of(3, seed=4, size=64)
    body = bench_client_payload(short, INSTRUCTION)
    assert encode_request(short, INSTRUCTION) == len(body).to_bytes(8, "big") + body


# ---------------------------------------------------------------- the server
def test_bench_client_gets_a_grammar_sentence_for_every_model_text(serve):
    texts: list[object] = [
        "The next action is move forward 75 cm.",
        "Go to the kitchen.",  # the client would silently move forward 25 cm
        "",
        "move forward 1 m",
        RuntimeError("CUDA out of memory"),
        "do not move forward",
        None,  # not a string
        "turn right",
        "The next action is stop.",
        "Stop here, no need to turn left 30 degrees.",
    ]
    responder = ScriptedResponder(texts)
    server = serve(responder)
    port = server.address[1]
    replies = []
    for step in range(len(texts)):
        frames = frames_of(step + 1, seed=step, size=512)
        reply = bench_client_ask(port, frames, INSTRUCTION)
        assert isinstance(reply, str)
        replies.append(reply)
    assert all(reply in ANSWERS for reply in replies)
    assert sum(bench_command(reply).default for reply in replies) == 0
    assert replies == [
        "The next action is move forward 75 cm.",
        DEFAULT_FALLBACK,
        DEFAULT_FALLBACK,
        "The next action is move forward 75 cm.",
        DEFAULT_FALLBACK,
        DEFAULT_FALLBACK,
        DEFAULT_FALLBACK,
        "The next action is turn right 15 degrees.",
        STOP_ANSWER,
        STOP_ANSWER,  # the model said stop
    ]
    assert responder.replies == replies
    assert server.stats.replies == 10 and server.stats.fallbacks == 5
    assert server.stats.errors == 2  # the exception and the non-string
    # the server saw what NaVILA-Bench sent: 8 decoded 512x512 frames, black padding in front
    first, fourth = responder.requests[0], responder.requests[3]
    assert [im.size for im in first.images] == [(512, 512)] * 8
    assert (first.padding, fourth.padding) == (7, 4)
    assert first.query == INSTRUCTION


def test_stop_is_only_sent_when_the_model_said_stop(serve):
    texts = ["move forward 25 cm", "xyz", "turn left 45 degrees", "Stop."]
    server = serve(ScriptedResponder(texts), fallback="turn left 15 degrees")
    replies = [
        bench_client_ask(server.address[1], frames_of(1, seed=i, size=32), INSTRUCTION)
        for i in range(len(texts))
    ]
    assert [bench_command(r).is_stop for r in replies] == [False, False, False, True]


def valid_payload(images: int = 8) -> bytes:
    return bench_client_payload(frames_of(images, size=32), INSTRUCTION)


def framed(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


def jpeg_b64(size: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def broken_png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[40:60] = b"\x00" * 20  # corrupt the image data chunk
    return base64.b64encode(bytes(data)).decode()


def gif_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="GIF")
    return base64.b64encode(buffer.getvalue()).decode()


BROKEN: dict[str, Callable[[], bytes]] = {
    "not JSON": lambda: framed(b"{images: nope"),
    "not UTF-8": lambda: framed(b"\xff\xfe\x00"),
    "a JSON list": lambda: framed(b"[1, 2, 3]"),
    "no query": lambda: framed(json.dumps({"images": [jpeg_b64(8)]}).encode()),
    "empty query": lambda: framed(json.dumps({"images": [jpeg_b64(8)], "query": " "}).encode()),
    "images not a list": lambda: framed(json.dumps({"images": "x", "query": "go"}).encode()),
    "nine images": lambda: framed(
        json.dumps({"images": [jpeg_b64(8)] * 9, "query": "go"}).encode()
    ),
    "not base64": lambda: framed(json.dumps({"images": ["@@@"], "query": "go"}).encode()),
    "base64 of text": lambda: framed(
        json.dumps({"images": [base64.b64encode(b"hello").decode()], "query": "go"}).encode()
    ),
    "an image too large": lambda: framed(
        json.dumps({"images": [jpeg_b64(3000)], "query": "go"}).encode()
    ),
    "a broken PNG": lambda: framed(
        json.dumps({"images": [broken_png_b64()], "query": "go"}).encode()
    ),
    "a GIF": lambda: framed(json.dumps({"images": [gif_b64()], "query": "go"}).encode()),
    "zero length": lambda: (0).to_bytes(8, "big"),
    "oversized length": lambda: (1 << 40).to_bytes(8, "big") + b"{",
    "truncated header": lambda: b"\x00\x00\x00",
    "truncated body": lambda: valid_payload_framed()[:-500],
}


def valid_payload_framed() -> bytes:
    return framed(valid_payload())


def test_broken_requests_are_rejected_and_the_server_keeps_serving(serve, caplog):
    caplog.set_level("WARNING", logger="nvila_core.serve")
    responder = ScriptedResponder(["turn right 30 degrees"] * 3)
    server = serve(responder, max_request_bytes=4 * 1024 * 1024)
    port = server.address[1]
    for name, make in BROKEN.items():
        assert raw_exchange(port, make()) == b"", name
    assert server.stats.rejected == len(BROKEN)
    assert responder.requests == []  # nothing broken reached the model
    reasons = " ".join(r.getMessage() for r in caplog.records)
    for expected in (
        "not JSON",
        "not UTF-8",
        "exceeds --max-request-bytes",
        "truncated",
        '"query"',
        "not base64",
        "cannot decode",
        "exceeds",
        "holds 9 frames",
    ):
        assert expected in reasons
    # still serving, byte for byte
    reply = bench_client_ask(port, frames_of(2, size=64), INSTRUCTION)
    assert reply == "The next action is turn right 30 degrees."


def test_slow_clients_time_out_without_blocking_others(serve):
    server = serve(ScriptedResponder(["move forward 50 cm"] * 5), request_timeout_s=1.0)
    port = server.address[1]
    payload = valid_payload_framed()
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(payload[:100])  # then nothing: a stalled client holds a connection
        start = time.monotonic()
        # another client is served meanwhile
        reply = bench_client_ask(port, frames_of(1, size=64), INSTRUCTION)
        assert reply == "The next action is move forward 50 cm."
        assert time.monotonic() - start < 1.0
        slow.settimeout(5.0)
        assert slow.recv(100) == b""  # closed at the deadline, no reply
        assert time.monotonic() - start < 3.0
    # a client that trickles bytes is held to the same whole-request deadline
    with socket.create_connection(("127.0.0.1", port)) as trickle:
        trickle.settimeout(5.0)
        start = time.monotonic()
        closed = False
        for byte in payload[:40]:
            try:
                trickle.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        if not closed:
            assert trickle.recv(100) == b""
        assert time.monotonic() - start < 5.0
    assert server.stats.rejected == 2
    assert bench_client_ask(port, frames_of(1, size=64), INSTRUCTION).endswith("50 cm.")


def test_connections_beyond_the_limit_are_closed(serve):
    server = serve(ScriptedResponder([]), max_connections=1, request_timeout_s=2.0)
    port = server.address[1]
    with socket.create_connection(("127.0.0.1", port)) as holder:
        holder.sendall(b"\x00")
        time.sleep(0.3)
        assert raw_exchange(port, valid_payload_framed()) == b""
    assert server.stats.refused_connections == 1
    time.sleep(0.3)
    assert bench_client_ask(port, frames_of(1, size=64), INSTRUCTION) == STOP_ANSWER


def test_token_is_required_when_configured(serve):
    server = serve(ScriptedResponder(["turn left 45 degrees"] * 2), token="s3cret")
    port = server.address[1]
    assert raw_exchange(port, valid_payload_framed()) == b""
    body = json.loads(valid_payload())
    body["token"] = "wrong"
    assert raw_exchange(port, framed(json.dumps(body).encode())) == b""
    body["token"] = "s3cret"
    reply = raw_exchange(port, framed(json.dumps(body).encode()), half_close=False)
    assert json.loads(reply[8:]) == "The next action is turn left 45 degrees."
    assert int.from_bytes(reply[:8], "big") == len(reply) - 8
    assert server.stats.rejected == 2


def test_access_rules():
    local = ServerConfig()
    assert (local.host, local.port) == ("127.0.0.1", 54321)
    assert local.client_allowed("127.0.0.1") and local.client_allowed("::1")
    assert not local.client_allowed("10.0.0.5")
    lan = ServerConfig(allow=["10.0.0.0/24"])
    assert lan.client_allowed("10.0.0.5") and not lan.client_allowed("10.0.1.5")
    assert lan.client_allowed("::ffff:10.0.0.7")
    token_only = ServerConfig(token="t")
    assert token_only.client_allowed("203.0.113.9")
    both = ServerConfig(token="t", allow=["192.168.1.0/24"])
    assert not both.client_allowed("203.0.113.9")
    with pytest.raises(ValueError, match="names no action"):
        ServerConfig(fallback="dance")
    with pytest.raises(ValueError, match="--allow"):
        ServerConfig(allow=["not-a-network"])
    assert ServerConfig(fallback="stop").fallback == STOP_ANSWER


def test_serve_help_is_fast_and_validates_options(capsys):
    from nvila_core.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--fallback" in out and "--token-file" in out and "127.0.0.1" in out
    assert main(["serve", "--model", "tiny", "--fallback", "dance"]) == 2
    assert "names no action" in capsys.readouterr().err
    assert main(["serve", "--model", "tiny", "--device", "cpu", "--port", "0"]) == 2
    assert "random weights" in capsys.readouterr().err


# ---------------------------------------------------------------- the engine behind it
def test_engine_responder_serves_the_tiny_model(serve, tiny_model, tiny_tokenizer):
    from nvila_core.runtime.engine import Engine, TorchBackend
    from nvila_core.serve.engine_responder import EngineResponder

    engine = Engine(TorchBackend(tiny_model), tiny_model.config, tiny_tokenizer)
    responder = EngineResponder(engine, decoding="choose")
    assert responder.history == "request"  # a NaVILA-history model: the 8 frames as sent
    server = serve(responder)
    for step in (1, 5, 12):
        reply = bench_client_ask(server.address[1], frames_of(step, seed=step, size=64), "go")
        assert reply in ANSWERS
    assert server.stats.replies == 3 and server.stats.fallbacks == 0


def test_recent_history_models_see_their_episode_rebuilt(serve, monkeypatch):
    """navila-nano (first view, latest decision views, executed actions): the responder
    rebuilds each episode from its requests, as the in-graph navigator would have it."""
    from pathlib import Path

    from nvila_core.runtime.engine import Engine
    from nvila_core.serve.engine_responder import EngineResponder

    model = Path(__file__).resolve().parents[2] / "models" / "navila-nano"
    engine = Engine.from_pretrained(model)
    assert engine.config.nav_history == "recent"
    seen: list[tuple[int, list, list]] = []
    navigate = engine.navigate

    def spy(instruction, frames, **kwargs):
        shown = [np.asarray(frames[i]) for i in (0, len(frames) - 1)]
        seen.append((len(frames), shown, list(kwargs["previous_actions"])))
        return navigate(instruction, frames, **kwargs)

    monkeypatch.setattr(engine, "navigate", spy)
    responder = EngineResponder(engine, decoding="choose")
    assert responder.history == "episode"
    server = serve(responder)
    port = server.address[1]
    # two interleaved episodes; frames arrive at 2 Hz, several per decision
    a, b = frames_of(12, seed=1, size=96), frames_of(12, seed=2, size=96)
    replies_a = []
    for count in (1, 3, 6, 10):
        replies_a.append(bench_client_ask(port, a[:count], "episode a"))
        bench_client_ask(port, b[:count], "episode b")
    a_calls = seen[0::2]
    assert [n for n, _, _ in a_calls] == [1, 2, 3, 4]  # one frame per decision
    for index, (_, (first, current), previous) in enumerate(a_calls):
        count = (1, 3, 6, 10)[index]
        decoded = [np.asarray(Image.open(io.BytesIO(_jpeg(a[i])))) for i in (0, count - 1)]
        assert np.array_equal(first, decoded[0]) and np.array_equal(current, decoded[1])
        expected = [r.removeprefix("The next action is ").removesuffix(".") for r in replies_a]
        assert previous == expected[:index]  # every executed action, oldest first
    # a new run of episode a (one real frame) starts afresh
    bench_client_ask(port, a[:1], "episode a")
    assert seen[-1][0] == 1 and seen[-1][2] == []


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_nvila_core_serve_process_answers_and_stops_on_sigterm(tmp_path):
    """`nvila-core serve` as a user starts it: the shipped model, a free port, one NaVILA-Bench
    request, SIGTERM ends it with status 0 after logging the request."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    model = Path(__file__).resolve().parents[2] / "models" / "navila-nano"
    if not (model / "config.json").is_file():
        pytest.skip("models/navila-nano is absent")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nvila_core",
            "serve",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--decoding",
            "choose",
            "--port",
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = server.stderr.readline()
        while line and "serving" not in line:
            line = server.stderr.readline()
        assert f"127.0.0.1:{port}" in line and "choose" in line
        reply = bench_client_ask(port, frames_of(3, size=512), INSTRUCTION)
        assert reply in ANSWERS
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    log = server.stderr.read()
    assert "frames=8 padding=5" in log and "total=" in log and "server stopped" in log
