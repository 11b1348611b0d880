"""From audio to decisions: VAD → streaming recognition → wake phrase / stop / confidence.

No ROS here, so the whole path is tested offline on synthetic speech, and the node only moves
audio in and decisions out. Decisions:

- An utterance is what the VAD calls speech; the recogniser starts at its onset (with a little
  pre-roll) and is never fed silence between utterances.
- "stop" / "halt" (optionally after the wake phrase) is a stop without the wake phrase. It does
  not wait for the end of the utterance: at the first short pause of a short utterance the
  recogniser is asked what it heard so far, and a stop fires then. Anything else resumes the
  utterance as if nothing happened (the audio so far is decoded again).
- Everything else needs the wake phrase (configurable) in front, and is sent only when the
  transcript's confidence reaches `min_confidence`; a stop has its own, lower threshold, since
  missing a stop costs more than an unwanted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nvila_nav.voice.language import DEFAULT_WAKE_PHRASE, STOP_WORDS
from nvila_nav.voice.recognizers import Recognizer, Transcript
from nvila_nav.voice.text import normalize, to_written
from nvila_nav.voice.vad import SpeechSegmenter


@dataclass(frozen=True)
class Interpretation:
    kind: str
    """"stop", "instruction" or "ignored"."""
    words: tuple[str, ...] = ()
    reason: str = ""


class CommandInterpreter:
    """Wake phrase and stop words over recognised words."""

    def __init__(self, wake_phrase: str = DEFAULT_WAKE_PHRASE, require_wake_phrase: bool = True):
        self.wake = tuple(normalize(wake_phrase).split())
        self.require_wake_phrase = require_wake_phrase

    def _after_wake(self, words: tuple[str, ...]) -> tuple[str, ...] | None:
        n = len(self.wake)
        return words[n:] if n and words[:n] == self.wake else None

    def is_stop(self, words: tuple[str, ...]) -> bool:
        rest = self._after_wake(words)
        rest = words if rest is None else rest
        return bool(rest) and all(word in STOP_WORDS for word in rest)

    def interpret(self, words: tuple[str, ...]) -> Interpretation:
        if not words:
            return Interpretation("ignored", reason="nothing recognised")
        if self.is_stop(words):
            return Interpretation("stop", words)
        rest = self._after_wake(words)
        if rest is None and not self.require_wake_phrase:
            rest = words
        if rest is None:
            return Interpretation("ignored", reason="no wake phrase")
        if not rest:
            return Interpretation("ignored", reason="wake phrase without an instruction")
        return Interpretation("instruction", rest)


@dataclass(frozen=True)
class Heard:
    """One decision about one utterance."""

    kind: str
    """"stop", "instruction" or "rejected"."""
    transcript: Transcript
    instruction: str = ""
    """The instruction as published (digits, sentence case); empty unless kind is instruction."""
    reason: str = ""
    early: bool = False
    """A stop decided at a pause, before the utterance ended."""
    silence_s: float = 0.0
    """Audio after the end of speech when the decision was taken (end of speech = now - this)."""
    speech_s: float = 0.0
    decode_s: float = 0.0
    """Wall time the recogniser needed after the last audio."""


@dataclass
class PipelineConfig:
    min_confidence: float = 0.6
    stop_min_confidence: float = 0.3
    stop_max_speech_s: float = 1.5
    """Only utterances this short are checked for a stop at a pause."""


@dataclass
class PipelineStats:
    utterances: int = 0
    """Times the recogniser was started (onsets the VAD called speech)."""
    dropped: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


class VoicePipeline:
    """Feed 16 kHz mono float audio; get `Heard` decisions back. Not thread-safe."""

    def __init__(
        self,
        segmenter: SpeechSegmenter,
        recognizer: Recognizer,
        interpreter: CommandInterpreter,
        config: PipelineConfig | None = None,
    ):
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.interpreter = interpreter
        self.config = config or PipelineConfig()
        self.stats = PipelineStats()
        self._utterance: list[np.ndarray] = []
        self._stopped = False

    def feed(self, samples: np.ndarray) -> list[Heard]:
        return self._handle(self.segmenter.feed(samples))

    def flush(self) -> list[Heard]:
        """End of the stream: decide on an utterance still open."""
        return self._handle(self.segmenter.flush())

    def _handle(self, events) -> list[Heard]:
        heard = []
        for event in events:
            if event.kind == "start":
                self.stats.utterances += 1
                self._utterance = []
                self._stopped = False
                self.recognizer.start()
                self._feed(event.audio)
            elif event.kind == "audio" and not self._stopped:
                self._feed(event.audio)
            elif event.kind == "pause" and not self._stopped:
                if event.speech_s <= self.config.stop_max_speech_s:
                    heard.extend(self._early_stop(event))
            elif event.kind == "end" and not self._stopped:
                heard.append(self._decide(event))
            elif event.kind == "drop":
                self.stats.dropped += 1
                if not self._stopped:
                    self.recognizer.finish()
        for item in heard:
            self.stats.decisions[item.kind] = self.stats.decisions.get(item.kind, 0) + 1
        return heard

    def _feed(self, audio: np.ndarray) -> None:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
        self._utterance.append(pcm)
        self.recognizer.feed(pcm)

    def _early_stop(self, event) -> list[Heard]:
        started = time.monotonic()
        transcript = self.recognizer.finish()
        decode_s = time.monotonic() - started
        if (
            self.interpreter.is_stop(transcript.words)
            and transcript.confidence >= self.config.stop_min_confidence
        ):
            self._stopped = True
            return [
                Heard(
                    "stop",
                    transcript,
                    early=True,
                    silence_s=event.silence_s,
                    speech_s=event.speech_s,
                    decode_s=decode_s,
                )
            ]
        # Not a stop: carry on with the same utterance, from its beginning.
        self.recognizer.start()
        for pcm in self._utterance:
            self.recognizer.feed(pcm)
        return []

    def _decide(self, event) -> Heard:
        started = time.monotonic()
        transcript = self.recognizer.finish()
        timing = {
            "silence_s": event.silence_s,
            "speech_s": event.speech_s,
            "decode_s": time.monotonic() - started,
        }
        meaning = self.interpreter.interpret(transcript.words)
        if meaning.kind == "stop":
            if transcript.confidence >= self.config.stop_min_confidence:
                return Heard("stop", transcript, **timing)
            return Heard("rejected", transcript, reason="stop with low confidence", **timing)
        if meaning.kind == "ignored":
            return Heard("rejected", transcript, reason=meaning.reason, **timing)
        if transcript.confidence < self.config.min_confidence:
            return Heard(
                "rejected",
                transcript,
                reason=f"confidence {transcript.confidence:.2f} < {self.config.min_confidence:.2f}",
                **timing,
            )
        return Heard(
            "instruction", transcript, instruction=to_written(list(meaning.words)), **timing
        )
