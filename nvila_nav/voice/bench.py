"""Voice benchmark: the spoken test set through the voice pipeline, scored.

    python -m nvila_nav.voice.bench                      # default backend, full set
    python -m nvila_nav.voice.bench --backend pocketsphinx --limit 16

Speech is synthesised with espeak-ng in several voices and speeds, mixed with white noise (20
and 10 dB SNR against the speech's power) or mains hum (50 Hz and harmonics, 0 dB), and fed to
`VoicePipeline` in 20 ms chunks exactly as the node does, with the node's defaults
(config/voice_teleop.yaml). Sets (nvila_nav/voice/benchset.py):

- natural: instructions and teleop commands written for people, after "hey robot";
- templates: simulator instructions of val_unseen episodes in voices the tests do not use;
- stops: the stop phrases alone; near misses: short phrases that must not stop.

Writes outputs/voice/bench_utterances.csv (one row per utterance), bench_summary.csv (per set,
condition and voice) and bench.png, and prints the summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvila_nav.voice.audio import read_wav
from nvila_nav.voice.benchset import (
    INSTRUCTIONS,
    NEAR_MISSES,
    STOPS,
    TELEOP,
    directions,
    goal_kept,
    key_words,
)
from nvila_nav.voice.commands import canonical_instruction
from nvila_nav.voice.text import normalize, word_errors
from nvila_nav.voice.vad import SAMPLE_RATE

VOICES = (
    ("en-gb", 175),
    ("en-us", 140),
    ("en-gb-scotland", 175),
    ("en-029", 175),
    ("en-us+f2", 190),
    ("en-gb-x-rp", 160),
)
"""espeak-ng voice and words per minute, taken in turn."""
TEMPLATE_VOICES = (
    ("en-gb", 175),
    ("en-gb-scotland", 175),
    ("en-gb-x-rp", 175),
    ("en-029", 175),
    ("en-us", 140),
    ("en-us", 190),
)
"""Voices the tests never use (they speak en-us at 175 wpm and its variants)."""
CONDITIONS = ("clean", "white20", "white10", "hum")
LEAD_S, TAIL_S = 1.0, 2.0
CHUNK = 320


@dataclass
class Row:
    set: str
    condition: str
    voice: str
    reference: str
    heard: str = ""
    published: str = ""
    decision: str = ""
    confidence: float = 0.0
    errors: int = 0
    words: int = 0
    keys: int = 0
    keys_kept: int = 0
    goal: str = ""
    goal_kept: int = 0
    wrong_published: int = 0
    changed: int = 0
    """The heard instruction changes the goal, a direction or the teleop command."""
    stopped: int = 0
    stop_latency_s: float = float("nan")
    decode_s: float = float("nan")


def synthesize(text: str, voice: str, wpm: int, folder: Path) -> np.ndarray:
    path = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(path), text], check=True)
    return read_wav(path)


def mix(speech: np.ndarray, condition: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Lead silence + speech + tail with the condition's noise; also where the speech ends."""
    audible = np.nonzero(np.abs(speech) > 1e-3)[0]
    power = float(np.mean(speech[audible[0] : audible[-1] + 1] ** 2))
    lead, tail = round(LEAD_S * SAMPLE_RATE), round(TAIL_S * SAMPLE_RATE)
    audio = np.concatenate([np.zeros(lead), speech, np.zeros(tail)]).astype(np.float32)
    end = lead + int(audible[-1]) + 1
    if condition.startswith("white"):
        snr_db = float(condition[5:])
        audio += rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(audio))
    elif condition == "hum":
        t = np.arange(len(audio)) / SAMPLE_RATE
        hum = sum(a * np.sin(2 * np.pi * f * t + f) for f, a in ((50, 1.0), (100, 0.5), (150, 0.3)))
        audio += hum * np.sqrt(power / np.mean(hum**2))
    return np.clip(audio, -1.0, 1.0).astype(np.float32), end


def run_utterance(pipeline, audio: np.ndarray, speech_end: int) -> tuple[list, float]:
    """Heard decisions, and end of speech → the stop detector's decision [s] (audio time +
    compute; NaN when it did not fire)."""
    heard, stop_latency = [], float("nan")
    for begin in range(0, len(audio), CHUNK):
        chunk_end = min(begin + CHUNK, len(audio))
        started = time.monotonic()
        out = pipeline.feed(audio[begin:chunk_end])
        for item in out:
            if item.kind == "stop" and item.early and np.isnan(stop_latency):
                compute = time.monotonic() - started
                stop_latency = (chunk_end - speech_end) / SAMPLE_RATE + compute
        heard.extend(out)
    heard.extend(pipeline.flush())
    return heard, stop_latency


def score(row: Row, heard: list, interpreter, is_instruction: bool, goal: str) -> None:
    instructions = [h for h in heard if h.kind == "instruction"]
    row.stopped = int(any(h.kind == "stop" for h in heard))
    stops = [h for h in heard if h.kind == "stop"]
    if stops:
        row.heard, row.confidence = (
            stops[0].transcript.text,
            round(stops[0].transcript.confidence, 3),
        )
    decisions = [h for h in heard if h.kind != "stop" or not h.early]
    transcript = decisions[-1].transcript if decisions else None
    if transcript is not None and not stops:
        words = interpreter._after_wake(transcript.words)
        row.heard = " ".join(transcript.words if words is None else words)
        row.confidence = round(transcript.confidence, 3)
        row.decode_s = round(decisions[-1].decode_s, 3)
    row.decision = ",".join(h.kind for h in heard) or "none"
    row.published = " | ".join(h.instruction for h in instructions)
    if not is_instruction:
        return
    row.errors, row.words = word_errors(row.reference, row.heard)
    keys = key_words(row.reference)
    heard_words = set(normalize(row.heard).split())
    row.keys, row.keys_kept = len(keys), sum(k in heard_words for k in keys)
    row.goal = goal
    row.goal_kept = int(bool(goal) and goal_kept(goal, row.heard))
    row.changed = int(changed_meaning(row.reference, row.heard, goal))
    row.wrong_published = int(bool(instructions) and bool(row.changed))


def changed_meaning(reference: str, heard: str, goal: str) -> bool:
    """Whether acting on `heard` would go somewhere else than `reference` says."""
    if goal:
        return not goal_kept(goal, heard) or directions(reference) != directions(heard)
    expected = canonical_instruction(normalize(reference).split())[0]
    return canonical_instruction(normalize(heard).split())[0] != expected


def last_landmark(instruction: str) -> str:
    """The goal of a simulator instruction: the words after its last "the"."""
    words = normalize(instruction).split()
    return " ".join(words[len(words) - words[::-1].index("the") :]) if "the" in words else ""


def _row(record: dict) -> Row:
    kinds = {name: f.type for name, f in Row.__dataclass_fields__.items()}
    return Row(**{k: {"int": int, "float": float}.get(kinds[k], str)(v) for k, v in record.items()})


def summarize(rows: list[Row]) -> list[dict]:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        for key in ((row.set, row.condition, "all"), (row.set, "all", row.voice)):
            groups.setdefault(key, []).append(row)
    for row in rows:
        groups.setdefault((row.set, "all", "all"), []).append(row)
    out = []
    for (name, condition, voice), members in groups.items():
        n = len(members)
        words = sum(r.words for r in members)
        goals = [r for r in members if r.goal]
        published = [r for r in members if r.published]
        wrong = [r for r in published if r.wrong_published]
        latencies = [r.stop_latency_s for r in members if r.stop_latency_s <= 2.0]
        decodes = [r.decode_s for r in members if not np.isnan(r.decode_s)]
        out.append(
            {
                "set": name,
                "condition": condition,
                "voice": voice,
                "n": n,
                "wer": round(sum(r.errors for r in members) / words, 4) if words else "",
                "key_recall": round(
                    sum(r.keys_kept for r in members) / max(1, sum(r.keys for r in members)), 4
                )
                if words
                else "",
                "goal_recall": round(sum(r.goal_kept for r in goals) / len(goals), 4)
                if goals
                else "",
                "published": round(len(published) / n, 4),
                "rejected": round(sum("rejected" in r.decision for r in members) / n, 4),
                "wrong_published": round(len(wrong) / len(published), 4) if published else "",
                "stopped": round(sum(r.stopped for r in members) / n, 4),
                "stopped_within_0_4_s": round(
                    sum(r.stopped and r.stop_latency_s <= 0.4 for r in members) / n, 4
                ),
                "stop_latency_p50_s": round(float(np.median(latencies)), 3) if latencies else "",
                "stop_latency_max_s": round(float(np.max(latencies)), 3) if latencies else "",
                "decode_p50_s": round(float(np.median(decodes)), 3) if decodes else "",
            }
        )
    return sorted(out, key=lambda r: (r["set"], r["condition"] != "all", r["voice"] != "all"))


def markdown(summary: list[dict]) -> str:
    """The per-set, per-condition rows as a Markdown table (docs/voice.md)."""
    columns = (
        ("set", "set"),
        ("condition", "condition"),
        ("n", "n"),
        ("wer", "WER %"),
        ("key_recall", "key words %"),
        ("goal_recall", "goal %"),
        ("published", "published %"),
        ("wrong_published", "wrong of published %"),
        ("stopped", "stopped %"),
        ("stopped_within_0_4_s", "stopped ≤ 0.4 s %"),
        ("stop_latency_p50_s", "stop p50 s"),
        ("stop_latency_max_s", "stop max s"),
        ("decode_p50_s", "decode p50 s"),
    )
    percent = {
        "wer",
        "key_recall",
        "goal_recall",
        "published",
        "wrong_published",
        "stopped",
        "stopped_within_0_4_s",
    }
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in summary:
        if row["voice"] != "all":
            continue
        cells = []
        for key, _ in columns:
            value = row[key]
            if key in percent and value != "":
                value = f"{100 * float(value):.1f}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    by = {(r["set"], r["condition"], r["voice"]): r for r in summary}
    for ax, (name, metrics) in zip(
        axes,
        (
            ("natural", ("wer", "goal_recall", "published")),
            ("stops", ("stopped",)),
            ("near_misses", ("stopped",)),
        ),
        strict=True,
    ):
        x = np.arange(len(CONDITIONS))
        for k, metric in enumerate(metrics):
            values = [by.get((name, c, "all"), {}).get(metric, "") for c in CONDITIONS]
            values = [float(v) if v != "" else 0.0 for v in values]
            ax.bar(x + 0.25 * k, values, width=0.25, label=metric)
        ax.set_xticks(x + 0.25 * (len(metrics) - 1) / 2, CONDITIONS)
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="", help="recogniser (default: the node's default)")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="the node's min_confidence (default: the backend's calibrated threshold); a low "
        "value records every transcript's confidence, for calibrating the threshold",
    )
    parser.add_argument("--limit", type=int, default=0, help="utterances per set and condition")
    parser.add_argument("--sets", default="natural,templates,stops,near_misses")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--out", type=Path, default=Path("outputs/voice"))
    parser.add_argument(
        "--summarize", action="store_true", help="only summarise an existing utterance CSV"
    )
    args = parser.parse_args(argv)

    from nvila_nav.nodes.voice_teleop import build_pipeline, default_parameters
    from nvila_nav.sim.episodes import generate_episodes

    params = default_parameters()
    if args.backend:
        params["backend"] = args.backend
    if args.min_confidence is not None:
        params["min_confidence"] = args.min_confidence
    sets = args.sets.split(",")
    conditions = args.conditions.split(",")
    natural = [(f"hey robot, {i.text}", i.text, i.goal, True) for i in (*INSTRUCTIONS, *TELEOP)]
    templates = [
        (
            f"hey robot, {e.instruction_text}",
            e.instruction_text,
            last_landmark(e.instruction_text),
            True,
        )
        for e in generate_episodes("val_unseen", 24, seed=0)
    ]
    plan = {
        "natural": (natural, VOICES),
        "templates": (templates, TEMPLATE_VOICES),
        "stops": ([(t, t, "", False) for t in STOPS * 3], VOICES),
        "near_misses": ([(t, t, "", False) for t in NEAR_MISSES], VOICES),
    }
    runs = [("stops", c) for c in conditions]
    runs += [("near_misses", c) for c in ("clean", "white20") if c in conditions]
    runs += [("templates", "clean")] + [("natural", c) for c in conditions]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    if args.summarize:
        with open(args.out / "bench_utterances.csv") as f:
            rows = [_row(record) for record in csv.DictReader(f)]
        runs = []
    rng = np.random.default_rng(0)
    started = time.monotonic()
    fields = list(Row.__dataclass_fields__)
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        pipeline, interpreter = build_pipeline(params) if runs else (None, None)
        if runs:
            out = stack.enter_context(open(args.out / "bench_utterances.csv", "w", newline=""))
            writer = csv.DictWriter(out, fields)
            writer.writeheader()
        for name, condition in runs:
            if name not in sets:
                continue
            items, voices = plan[name]
            items = items[: args.limit] if args.limit else items
            c = CONDITIONS.index(condition)
            for i, (spoken, reference, goal, is_instruction) in enumerate(items):
                voice, wpm = voices[(i + c + i // len(voices)) % len(voices)]
                speech = synthesize(spoken, voice, wpm, Path(folder))
                audio, end = mix(speech, condition, rng)
                pipeline, interpreter = build_pipeline(params, pipeline)
                heard, latency = run_utterance(pipeline, audio, end)
                row = Row(name, condition, f"{voice}@{wpm}", reference)
                row.stop_latency_s = round(latency, 3)
                score(row, heard, interpreter, is_instruction, goal)
                rows.append(row)
                writer.writerow(vars(row))
                out.flush()
            print(
                f"{name} {condition}: {len(rows)} utterances, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    summary = summarize(rows)
    with open(args.out / "bench_summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    plot(summary, args.out / "bench.png")
    columns = list(summary[0])
    print(" | ".join(columns))
    for r in summary:
        print(" | ".join(str(r[c]) for c in columns))
    print(markdown(summary))
    print(f"wrote {args.out}/bench_utterances.csv, bench_summary.csv, bench.png")


if __name__ == "__main__":
    main()
