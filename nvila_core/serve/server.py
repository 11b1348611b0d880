"""The NaVILA-Bench VLM server: framing, limits, timeouts, access control, a reply for every
well-formed request.

One thread per connection reads the request (at most `max_connections` at once, each with a
deadline for the whole request), and answers run one at a time through the `Responder` (the
model is not re-entrant). Every request is logged on one line: peer, frames, answer, latency.

What a client gets:
- a well-formed request: always one of the ten grammar sentences (`protocol.ANSWERS`). Model
  text outside the grammar, and any exception inside the responder, become the fallback
  sentence (default "turn left 15 degrees", see `protocol.DEFAULT_FALLBACK`), logged with the reason.
  "stop" is sent only when the model's own text says stop.
- a request that breaks the protocol (length over `max_request_bytes`, a body cut short or
  too slow, not JSON, wrong fields, images that are not base64 JPEG/PNG or too large), or a
  client the access rules refuse: no reply, the connection is closed and the reason logged.
  The server keeps serving.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nvila_core.serve.protocol import (
    ANSWERS,
    DEFAULT_FALLBACK,
    DEFAULT_PORT,
    FRAME_SIZE,
    HEADER_BYTES,
    NUM_IMAGES,
    BenchRequest,
    RequestError,
    canonical_answer,
    decode_images,
    encode_reply,
    parse_request,
)

log = logging.getLogger("nvila_core.serve")

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Responder(Protocol):
    """What answers requests: the model (`EngineResponder`), or an oracle for testing."""

    name: str

    def respond(self, request: BenchRequest) -> str:
        """Text for the request's next action (any wording; the server maps it to the grammar)."""
        ...

    def record_reply(self, request: BenchRequest, reply: str) -> None:
        """The grammar sentence the client was sent for this request (per-episode state)."""
        ...


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_request_bytes: int = 16 * 1024 * 1024
    """8 JPEGs of 512x512 frames are about 0.1-0.5 MB of base64; longer bodies are refused
    unread."""
    max_images: int = NUM_IMAGES
    max_image_pixels: int = 4 * FRAME_SIZE * FRAME_SIZE * 4
    """Per frame (2048x2048 by default), checked before decompression."""
    request_timeout_s: float = 30.0
    """Deadline for a whole request (header and body), from accept."""
    reply_timeout_s: float = 30.0
    max_connections: int = 4
    """Connections being read or answered at once; more are closed at accept (bounded memory:
    at most this many request bodies held)."""
    fallback: str = DEFAULT_FALLBACK
    allow: Sequence[str] = ()
    """Client networks allowed besides loopback (CIDR or addresses)."""
    token: str | None = None
    """When set, a request must carry it as its "token" JSON key."""
    allowed_networks: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        reply = canonical_answer(self.fallback)
        if reply is None:
            raise ValueError(f"fallback {self.fallback!r} names no action of the grammar")
        self.fallback = reply
        try:
            self.allowed_networks = [ipaddress.ip_network(a, strict=False) for a in self.allow]
        except ValueError as err:
            raise ValueError(f"--allow: {err}") from None
        if self.token is not None and not self.token:
            raise ValueError("the token must not be empty")
        for name in ("max_request_bytes", "max_images", "max_image_pixels", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.request_timeout_s <= 0 or self.reply_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    def client_allowed(self, address: str) -> bool:
        """Loopback and the --allow networks; any address when only a token guards the
        server."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if any(ip in net for net in LOOPBACK):
            return True
        if self.token is not None and not self.allowed_networks:
            return True
        return any(ip.version == net.version and ip in net for net in self.allowed_networks)


@dataclass
class ServerStats:
    """Counters since start (logged at shutdown, read by tests); `count` is thread-safe."""

    replies: int = 0
    """Answers computed and handed to the socket."""
    undelivered: int = 0
    """Of those, replies the client did not take (it had gone)."""
    fallbacks: int = 0
    errors: int = 0
    rejected: int = 0
    refused_connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class _Rejected(Exception):
    """Close without a reply; the message is the logged reason."""


class BenchServer:
    """serve_forever() until shutdown(); `address` is the bound (host, port)."""

    def __init__(self, responder: Responder, config: ServerConfig | None = None) -> None:
        self.responder = responder
        self.config = config or ServerConfig()
        self.stats = ServerStats()
        self._model_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.max_connections)
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.config.host, self.config.port))
        except OSError:
            self._socket.close()
            raise
        self._socket.listen(16)
        self._socket.settimeout(0.5)  # wakes the accept loop to see shutdown()
        self._threads: set[threading.Thread] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self._socket.getsockname()[:2]

    def serve_forever(self) -> None:
        host, port = self.address
        log.info(
            "NaVILA-Bench server (%s) on %s:%d; fallback %r",
            self.responder.name,
            host,
            port,
            self.config.fallback,
        )
        try:
            while not self._stop.is_set():
                try:
                    conn, addr = self._socket.accept()
                except TimeoutError:
                    continue
                except OSError as err:
                    if self._stop.is_set():
                        break
                    log.warning("accept failed: %s", err)
                    continue
                self._start_connection(conn, addr)
        finally:
            self._socket.close()
            for thread in list(self._threads):
                thread.join(timeout=self.config.reply_timeout_s)
            log.info("server stopped: %s", self.stats.as_dict())

    def shutdown(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ connections
    def _start_connection(self, conn: socket.socket, addr: tuple) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        if not self._slots.acquire(blocking=False):
            self.stats.count("refused_connections")
            log.warning(
                "%s refused: %d connections already open", peer, self.config.max_connections
            )
            conn.close()
            return
        thread = threading.Thread(
            target=self._handle, args=(conn, addr, peer), name=f"bench {peer}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _handle(self, conn: socket.socket, addr: tuple, peer: str) -> None:
        try:
            with conn:
                self._serve_connection(conn, addr, peer)
        except Exception:  # a bug here must not end the server: log it, keep serving
            self.stats.count("errors")
            log.exception("%s: unexpected error", peer)
        finally:
            self._threads.discard(threading.current_thread())
            self._slots.release()

    def _serve_connection(self, conn: socket.socket, addr: tuple, peer: str) -> None:
        start = time.perf_counter()
        try:
            if not self.config.client_allowed(addr[0]):
                raise _Rejected("client address not allowed (see --allow / --token)")
            deadline = time.monotonic() + self.config.request_timeout_s
            header = _read_exact(conn, HEADER_BYTES, deadline, "length header")
            size = int.from_bytes(header, "big")
            if size == 0:
                raise _Rejected("empty body (length 0)")
            if size > self.config.max_request_bytes:
                raise _Rejected(
                    f"request of {size} bytes exceeds --max-request-bytes "
                    f"{self.config.max_request_bytes}; body not read"
                )
            body = _read_exact(conn, size, deadline, f"body of {size} bytes")
            request = parse_request(body, self.config.max_images)
            del body
            request.peer = peer
            self._check_token(request)
            decode_images(request, self.config.max_image_pixels)
        except (_Rejected, RequestError) as err:
            self.stats.count("rejected")
            log.warning("%s rejected, no reply: %s", peer, err)
            return
        read_ms = (time.perf_counter() - start) * 1e3
        with self._model_lock:
            model_start = time.perf_counter()
            reply, raw, why = self._answer(request)
            model_ms = (time.perf_counter() - model_start) * 1e3
        self.stats.count("replies")
        conn.settimeout(self.config.reply_timeout_s)
        try:
            conn.sendall(encode_reply(reply))
        except OSError as err:
            self.stats.count("undelivered")
            log.warning("%s: reply not delivered (%s): %r", peer, err, reply)
            return
        log.info(
            "%s frames=%d padding=%d query=%dch reply=%r%s read=%.0fms model=%.0fms total=%.0fms",
            peer,
            len(request.images),
            request.padding,
            len(request.query),
            reply,
            f" (fallback: {why}; model text {raw!r})" if why else "",
            read_ms,
            model_ms,
            (time.perf_counter() - start) * 1e3,
        )

    def _check_token(self, request: BenchRequest) -> None:
        token = self.config.token
        if token is None:
            return
        given = request.extra.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            raise _Rejected("missing or wrong token")

    def _answer(self, request: BenchRequest) -> tuple[str, str, str]:
        """(reply, model text, why the fallback was used or "")."""
        raw = ""
        try:
            raw = self.responder.respond(request)
            if not isinstance(raw, str):
                raise TypeError(f"responder returned {type(raw).__name__}, not str")
            reply = canonical_answer(raw)
            why = "" if reply is not None else "the model's text names no action"
        except Exception as err:
            self.stats.count("errors")
            log.exception("%s: responder failed", request.peer)
            reply, why = None, f"responder error {type(err).__name__}: {err}"
        if reply is None:
            self.stats.count("fallbacks")
            reply = self.config.fallback
        assert reply in ANSWERS
        try:
            self.responder.record_reply(request, reply)
        except Exception:
            self.stats.count("errors")
            log.exception("%s: recording the reply failed", request.peer)
        return reply, raw, why


def _read_exact(conn: socket.socket, count: int, deadline: float, what: str) -> bytes:
    """Exactly `count` bytes before `deadline` (monotonic), else _Rejected."""
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Rejected(f"timed out reading the {what} ({count - remaining} bytes came)")
        conn.settimeout(left)
        try:
            chunk = conn.recv(min(remaining, 1 << 20))
        except TimeoutError:
            raise _Rejected(
                f"timed out reading the {what} ({count - remaining} bytes came)"
            ) from None
        except OSError as err:
            raise _Rejected(f"connection failed reading the {what}: {err}") from None
        if not chunk:
            raise _Rejected(f"truncated: the {what} ended after {count - remaining} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
