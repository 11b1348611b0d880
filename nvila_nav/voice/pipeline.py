"""From audio to decisions: VAD → stop detector and recogniser → wake phrase / confidence.

No ROS here, so the whole path is tested offline on synthetic speech, and the node only moves
audio in and decisions out. Decisions:

- An utterance is what the VAD calls speech; the recogniser hears it with a little pre-roll and
  never the silence or noise between utterances.
- Stops come from the stop detector (nvila_nav/voice/stopword.py), which hears every short
  speech segment (denoised) as it arrives and is asked at the segment's first short pause:
  "stop", "halt", "freeze" or "emergency stop" alone, with or without the wake phrase, stops
  at once, whatever the recogniser or its confidence. A transcript that is a stop phrase alone
  also stops (later, at the end of the utterance), in case the detector missed it.
- Everything else needs the wake phrase in front, matched loosely (`match_wake`: "herobot",
  "hey, robot", "hey robert"), and is sent only when the transcript's confidence reaches
  `min_confidence` (calibrated per backend).
- Sentence pauses do not cut an instruction: once an utterance starts with the wake phrase,
  speech that resumes within `instruction_end_silence_s` of its end belongs to the same
  instruction, and the whole is decoded again.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from nvila_nav.voice.commands import canonical_instruction
from nvila_nav.voice.language import DEFAULT_WAKE_PHRASE, STOP_WORDS
from nvila_nav.voice.recognizers import Recognizer, Transcript
from nvila_nav.voice.stopword import Denoiser, StopDetector
from nvila_nav.voice.text import normalize
from nvila_nav.voice.vad import SAMPLE_RATE, SpeechSegmenter

_STOP_FILLERS = frozenset({"emergency"})
"""Words allowed next to a stop word in a stop ("emergency stop")."""


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def match_wake(
    words: tuple[str, ...], wake: tuple[str, ...], tolerance: float = 0.25
) -> tuple[str, ...] | None:
    """The words after the wake phrase, or None when the utterance does not start with it.

    Loose on purpose, since recognisers spell a spoken name many ways: the letters of the
    first one to `len(wake) + 1` words (after at most one leading word such as "okay") are
    compared with the wake phrase's letters, and an edit distance up to `tolerance` times its
    length matches ("herobot", "hey robert", "hey robots" for "hey robot").
    """
    if not wake:
        return words
    target = "".join(wake)
    limit = int(tolerance * len(target))
    best: tuple[int, int] | None = None
    for skip in (0, 1):
        for n in range(1, len(wake) + 2):
            if skip + n > len(words):
                break
            distance = _edit_distance("".join(words[skip : skip + n]), target)
            if distance <= limit and (best is None or distance < best[0]):
                best = (distance, skip + n)
    return None if best is None else words[best[1] :]


@dataclass(frozen=True)
class Interpretation:
    kind: str
    """"stop", "instruction" or "ignored"."""
    words: tuple[str, ...] = ()
    reason: str = ""


class CommandInterpreter:
    """Wake phrase and stop words over recognised words."""

    def __init__(
        self,
        wake_phrase: str = DEFAULT_WAKE_PHRASE,
        require_wake_phrase: bool = True,
        wake_tolerance: float = 0.25,
    ):
        self.wake = tuple(normalize(wake_phrase).split())
        self.require_wake_phrase = require_wake_phrase
        self.wake_tolerance = wake_tolerance

    def _after_wake(self, words: tuple[str, ...]) -> tuple[str, ...] | None:
        if not self.wake:
            return None
        return match_wake(words, self.wake, self.wake_tolerance)

    def is_stop(self, words: tuple[str, ...]) -> bool:
        rest = self._after_wake(words)
        rest = words if rest is None else rest
        return any(word in STOP_WORDS for word in rest) and all(
            word in STOP_WORDS or word in _STOP_FILLERS for word in rest
        )

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
    """A stop decided by the stop detector at a pause, before the utterance ended."""
    silence_s: float = 0.0
    """Audio after the end of speech when the decision was taken (end of speech = now - this)."""
    speech_s: float = 0.0
    decode_s: float = 0.0
    """Wall time the recogniser (or the stop detector) needed after the last audio."""
    command: str = ""
    """A recognised teleop command in the action grammar's words (nvila_nav/voice/commands.py)."""


@dataclass
class PipelineConfig:
    min_confidence: float = 0.6
    stop_min_confidence: float = 0.3
    """Confidence a stop needs when it comes from the recogniser's transcript."""
    stop_max_speech_s: float = 1.5
    """Only segments this short go to the stop detector."""
    instruction_end_silence_s: float = 1.0
    """Silence after which an instruction that started with the wake phrase is over; speech
    that resumes earlier continues it. At most the segmenter's end silence: off."""


@dataclass
class PipelineStats:
    utterances: int = 0
    """Speech segments the VAD started."""
    dropped: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pending:
    """An instruction heard with its wake phrase, waiting to see whether speech resumes."""

    audio: list[np.ndarray]
    transcript: Transcript
    decode_s: float
    speech_s: float
    silence_s: float


@dataclass
class _Job:
    """A decode running in the recogniser's thread."""

    future: Future
    audio: list[np.ndarray]
    speech_s: float
    silence_s: float


class VoicePipeline:
    """Feed 16 kHz mono float audio; get `Heard` decisions back. Not thread-safe.

    The recogniser runs in a thread of its own, so the VAD and the stop detector keep up with
    the audio while an instruction is decoded: a stop said then is not delayed by the decode.
    `close` ends that thread.
    """

    def __init__(
        self,
        segmenter: SpeechSegmenter,
        recognizer: Recognizer,
        interpreter: CommandInterpreter,
        config: PipelineConfig | None = None,
        stop_detector: StopDetector | None = None,
        denoiser: Denoiser | None = None,
    ):
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.interpreter = interpreter
        self.config = config or PipelineConfig()
        self.stop_detector = stop_detector
        self.denoiser = denoiser or Denoiser()
        self.stats = PipelineStats()
        self._segment: list[np.ndarray] = []
        self._speech_s = 0.0
        self._stopped = False
        self._checking = False
        self._pending: _Pending | None = None
        self._job: _Job | None = None
        self._background: list[np.ndarray] = []
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="voice-decode")

    def close(self) -> None:
        self._decoder.shutdown(wait=True, cancel_futures=True)

    def feed(self, samples: np.ndarray) -> list[Heard]:
        return self._handle(self.segmenter.feed(samples))

    def flush(self) -> list[Heard]:
        """End of the stream: decide on an utterance still open, decoding or waiting."""
        heard = self._handle(self.segmenter.flush())
        final: list[Heard] = []
        if self._job is not None:
            final.extend(self._finish_job())
        if self._pending is not None:
            final.append(self._release())
        self._count(final)
        return heard + final

    def _count(self, heard: list[Heard]) -> None:
        for item in heard:
            self.stats.decisions[item.kind] = self.stats.decisions.get(item.kind, 0) + 1

    def _handle(self, events) -> list[Heard]:
        heard: list[Heard] = []
        for event in events:
            if event.kind == "background":
                self._on_background(event.audio, heard)
            elif event.kind == "start":
                self.stats.utterances += 1
                self._segment = []
                self._stopped = False
                self._checking = self.stop_detector is not None
                self.denoiser.reset()
                if self._checking:
                    self.stop_detector.start()
                self._add(event.audio)
            elif event.kind == "audio" and not self._stopped:
                self._add(event.audio, event.speech_s)
            elif event.kind == "pause" and not self._stopped:
                heard.extend(self._stop_check(event))
            elif event.kind == "end" and not self._stopped:
                if self._checking and self._speech_s <= self.config.stop_max_speech_s:
                    heard.extend(self._stop_check(event))
                if not self._stopped:
                    heard.extend(self._end(event))
            elif event.kind == "drop":
                self.stats.dropped += 1
                if (self._pending or self._job) and not self._stopped:
                    self._background.extend(self._segment)
        if self._job is not None and self._job.future.done():
            heard.extend(self._finish_job())
        self._count(heard)
        return heard

    def _on_background(self, audio: np.ndarray, heard: list[Heard]) -> None:
        self.denoiser.observe(audio)
        waiting = self._pending or self._job
        if waiting is None:
            return
        self._background.append(audio)
        waiting.silence_s += len(audio) / SAMPLE_RATE
        if self._job is not None and self._job.future.done():
            heard.extend(self._finish_job())
        if (
            self._pending is not None
            and self._pending.silence_s >= self.config.instruction_end_silence_s
        ):
            heard.append(self._release())

    def _add(self, audio: np.ndarray, speech_s: float = 0.0) -> None:
        self._segment.append(audio)
        self._speech_s = speech_s
        if self._checking:
            if speech_s > self.config.stop_max_speech_s:
                self._checking = False
                self.stop_detector.finish()
            else:
                self.stop_detector.feed(_pcm(self.denoiser.process(audio)))

    def _stop_check(self, event) -> list[Heard]:
        if not self._checking:
            return []
        self._checking = False
        check = self.stop_detector.finish()
        if not check.stop:
            return []
        self._stopped = True
        self._pending = self._job = None  # a stop cancels an instruction not yet sent
        self._background = []
        return [
            Heard(
                "stop",
                Transcript(check.words, check.confidence, "stop_detector"),
                early=True,
                silence_s=event.silence_s,
                speech_s=event.speech_s,
                decode_s=check.decode_s,
            )
        ]

    def _end(self, event) -> list[Heard]:
        """Hand the utterance to the recogniser's thread; one that began with the wake phrase
        and is still waiting takes this segment as its continuation."""
        heard = self._finish_job() if self._job is not None else []
        audio = self._segment
        if self._pending is not None:
            audio = [*self._pending.audio, *self._background, *self._segment]
        self._background = []
        self._pending = None
        future = self._decoder.submit(self._decode, np.concatenate(audio))
        self._job = _Job(future, audio, event.speech_s, event.silence_s)
        return heard

    def _decode(self, audio: np.ndarray) -> tuple[Transcript, float]:
        started = time.monotonic()
        self.recognizer.start()
        self.recognizer.feed(_pcm(audio))
        transcript = self.recognizer.finish()
        return transcript, time.monotonic() - started

    def _finish_job(self) -> list[Heard]:
        """The decision on the decoded utterance (waits for the decode)."""
        job, self._job = self._job, None
        transcript, decode_s = job.future.result()
        timing = {"silence_s": job.silence_s, "speech_s": job.speech_s, "decode_s": decode_s}
        meaning = self.interpreter.interpret(transcript.words)
        if meaning.kind == "stop":
            self._background = []
            if transcript.confidence >= self.config.stop_min_confidence:
                return [Heard("stop", transcript, **timing)]
            return [Heard("rejected", transcript, reason="stop with low confidence", **timing)]
        if meaning.kind == "ignored":
            self._background = []
            return [Heard("rejected", transcript, reason=meaning.reason, **timing)]
        end_s = self.config.instruction_end_silence_s
        if end_s > self.segmenter.config.end_silence_ms / 1000:
            self._pending = _Pending(job.audio, transcript, decode_s, job.speech_s, job.silence_s)
            if job.silence_s < end_s:
                return []
            return [self._release()]
        self._background = []
        return [self._instruction(transcript, meaning.words, **timing)]

    def _release(self) -> Heard:
        pending, self._pending = self._pending, None
        self._background = []
        meaning = self.interpreter.interpret(pending.transcript.words)
        return self._instruction(
            pending.transcript,
            meaning.words,
            silence_s=pending.silence_s,
            speech_s=pending.speech_s,
            decode_s=pending.decode_s,
        )

    def _instruction(self, transcript: Transcript, words: tuple[str, ...], **timing) -> Heard:
        if transcript.confidence < self.config.min_confidence:
            return Heard(
                "rejected",
                transcript,
                reason=f"confidence {transcript.confidence:.2f} < {self.config.min_confidence:.2f}",
                **timing,
            )
        instruction, command = canonical_instruction(list(words))
        return Heard("instruction", transcript, instruction=instruction, command=command, **timing)


def _pcm(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
