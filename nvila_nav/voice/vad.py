"""Voice activity detection: silero-vad through onnxruntime, and a streaming speech segmenter.

The silero-vad pip package ships its ONNX model; it is located without importing the package
(whose import pulls in torch) and run with onnxruntime, so no pickled model is ever loaded.
Recognition runs only on what the segmenter calls speech: silence and noise never reach it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512
"""Samples per VAD frame at 16 kHz (32 ms), the size silero-vad's v5+ model takes."""
_CONTEXT = 64
"""silero-vad prepends the previous frame's last 64 samples to every frame."""


def silero_model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"silero-vad's ONNX model is missing: {path}")
    return path


class SileroVad:
    """Speech probability of each 32 ms frame of 16 kHz mono float audio; keeps its RNN state."""

    def __init__(self, model_path: Path | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path or silero_model_path()),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        if frame.shape != (FRAME,):
            raise ValueError(f"a VAD frame is {FRAME} samples, got {frame.shape}")
        x = np.concatenate([self._context, frame.astype(np.float32)])[None, :]
        out, self._state = self._session.run(
            None, {"input": x, "state": self._state, "sr": self._sr}
        )
        self._context = x[0, -_CONTEXT:]
        return float(out[0, 0])


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    """Speech starts at this probability and continues until it drops below threshold - 0.15."""
    min_speech_ms: int = 150
    """Shorter bursts (clicks, bumps) are dropped unrecognised."""
    end_silence_ms: int = 500
    """Silence that ends an utterance (instructions pause at commas for less)."""
    pause_ms: int = 160
    """Silence after which the segmenter reports a pause, for the early stop check."""
    pre_roll_ms: int = 200
    """Audio before the detected start that goes to the recogniser (onsets are quiet)."""
    max_utterance_s: float = 20.0


@dataclass(frozen=True)
class SpeechEvent:
    """kind: "start" (audio = pre-roll), "audio" (a frame of speech or trailing silence),
    "pause" (silence reached pause_ms), "end" (utterance over), "drop" (too short) or
    "background" (a frame outside speech: the noise floor).
    `silence_s` is the trailing silence at the event, so end of speech = now - silence_s."""

    kind: str
    audio: np.ndarray | None = None
    speech_s: float = 0.0
    silence_s: float = 0.0


class SpeechSegmenter:
    """Cuts a 16 kHz float stream into utterances, frame by frame, with a VAD."""

    def __init__(self, vad: SileroVad, config: SegmenterConfig = SegmenterConfig()):
        self.vad = vad
        self.config = config
        self._pending = np.zeros(0, dtype=np.float32)
        self._history: list[np.ndarray] = []
        self._pre_roll_frames = max(1, round(config.pre_roll_ms * SAMPLE_RATE / 1000 / FRAME))
        self._frame_s = FRAME / SAMPLE_RATE
        self.frames_seen = 0
        self.in_speech = False
        self._speech_frames = 0
        self._utterance_frames = 0
        self._silent_frames = 0
        self._paused = False

    def feed(self, samples: np.ndarray) -> list[SpeechEvent]:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        events: list[SpeechEvent] = []
        while len(self._pending) >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            events.extend(self._frame(frame))
        return events

    def flush(self) -> list[SpeechEvent]:
        """End of stream: close an utterance in progress."""
        self._pending = np.zeros(0, dtype=np.float32)
        return [self._close()] if self.in_speech else []

    def _frame(self, frame: np.ndarray) -> list[SpeechEvent]:
        self.frames_seen += 1
        probability = self.vad(frame)
        config = self.config
        if not self.in_speech:
            self._history = [*self._history[-(self._pre_roll_frames - 1) :], frame]
            if probability < config.threshold:
                return [SpeechEvent("background", frame)]
            self.in_speech = True
            self._speech_frames = self._utterance_frames = 1
            self._silent_frames = 0
            self._paused = False
            pre_roll = np.concatenate(self._history)
            self._history = []
            return [SpeechEvent("start", pre_roll, speech_s=self._frame_s)]
        self._utterance_frames += 1
        if probability >= config.threshold - 0.15:
            self._speech_frames += 1
            self._silent_frames = 0
            self._paused = False
        else:
            self._silent_frames += 1
        events = [SpeechEvent("audio", frame, **self._times())]
        silence_ms = self._silent_frames * self._frame_s * 1000
        if not self._paused and silence_ms >= config.pause_ms:
            self._paused = True
            events.append(SpeechEvent("pause", **self._times()))
        if (
            silence_ms >= config.end_silence_ms
            or self._utterance_frames * self._frame_s >= config.max_utterance_s
        ):
            events.append(self._close())
        return events

    def _times(self) -> dict[str, float]:
        return {
            "speech_s": self._speech_frames * self._frame_s,
            "silence_s": self._silent_frames * self._frame_s,
        }

    def _close(self) -> SpeechEvent:
        self.in_speech = False
        kind = (
            "end"
            if self._speech_frames * self._frame_s * 1000 >= self.config.min_speech_ms
            else "drop"
        )
        return SpeechEvent(kind, **self._times())
