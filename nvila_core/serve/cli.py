"""`nvila-core serve`: the NaVILA-Bench VLM server on an `Engine` (argparse only at import)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from nvila_core.serve.protocol import DEFAULT_FALLBACK, DEFAULT_PORT


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is None:
        return None
    with open(args.token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        raise ValueError(f"token file {args.token_file} is empty")
    return token


def server_config(args: argparse.Namespace):
    """The ServerConfig of the parsed options (shared with nvila-nav-navila-bench)."""
    from nvila_core.serve.server import ServerConfig

    return ServerConfig(
        host=args.host,
        port=args.port,
        max_request_bytes=args.max_request_bytes,
        request_timeout_s=args.request_timeout,
        reply_timeout_s=args.request_timeout,
        max_connections=args.max_connections,
        fallback=args.fallback,
        allow=tuple(args.allow or ()),
        token=_token(args),
    )


def run_server(responder, config) -> int:
    """Serve until SIGINT/SIGTERM; logs every request at INFO."""
    from nvila_core.serve.server import BenchServer

    logging.getLogger("nvila_core.serve").setLevel(logging.INFO)
    server = BenchServer(responder, config)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.shutdown())
    host, port = server.address
    print(f"serving NaVILA-Bench requests on {host}:{port} ({responder.name})", file=sys.stderr)
    server.serve_forever()
    return 0


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Network, limit and access options of every NaVILA-Bench server command."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for all, with "
        "--allow or --token)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default 54321)")
    parser.add_argument(
        "--allow",
        action="append",
        metavar="CIDR",
        help="client network allowed besides loopback, e.g. 10.0.0.0/24 (repeatable)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="require this file's text as the request's \"token\" JSON key (a client that "
        "adds it; NaVILA-Bench's own client does not)",
    )
    parser.add_argument(
        "--fallback",
        default=DEFAULT_FALLBACK,
        help="answer when the model names no action or fails (default: %(default)r; "
        '"stop" ends the episode)',
    )
    parser.add_argument(
        "--max-request-bytes", type=int, default=16 * 1024 * 1024, help="longer bodies are refused"
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a client has to send its whole request (and to take the reply)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=4, help="connections open at once; more are closed"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from nvila_core.runtime.engine import Engine
    from nvila_core.serve.engine_responder import EngineResponder

    logging.getLogger("nvila_core.serve").setLevel(logging.INFO)
    config = server_config(args)  # fail on bad options before loading weights
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = Engine.from_pretrained(
        args.model, backend=args.backend, device=device, dtype=args.dtype, seed=args.seed
    )
    if engine.random_weights and not args.allow_random_weights:
        raise ValueError(
            f"{args.model!r} is a preset with random weights; pass a checkpoint folder "
            "(or --allow-random-weights for tests)"
        )
    responder = EngineResponder(
        engine,
        decoding=args.decoding,
        max_new_tokens=args.max_new_tokens,
        history=args.history,
        max_episodes=args.max_episodes,
    )
    return run_server(responder, config)


def add_serve_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="NaVILA-Bench VLM server (Isaac Sim evaluation) on a checkpoint or export folder",
        description="Answer NaVILA-Bench's evaluator (TCP, 8-byte length + JSON) with this "
        "package's Engine. Every request gets one of the ten grammar sentences, or no reply when "
        "it breaks the protocol; each is logged with its latency. docs/isaac.md has the "
        "step-by-step run.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint folder (or an export folder for onnxruntime / tensorrt)",
    )
    parser.add_argument("--backend", default="torch", help="torch | onnxruntime | tensorrt")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: checkpoint's)")
    parser.add_argument(
        "--decoding",
        default="generate",
        choices=("generate", "choose"),
        help="generate: greedy text (NaVILA); choose: the most probable of the ten answers "
        "(navila-nano)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--history",
        default="auto",
        choices=("auto", "episode", "request"),
        help="auto: the request's 8 frames for NaVILA-format models, the episode rebuilt from "
        "the requests for recent-history models (navila-nano); request: always the request's",
    )
    parser.add_argument(
        "--max-episodes", type=int, default=8, help="episodes remembered (history episode)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for a preset's random weights")
    parser.add_argument(
        "--allow-random-weights", action="store_true", help="let a preset (random weights) serve"
    )
    add_server_options(parser)
    parser.set_defaults(handler=cmd_serve)
    return parser
