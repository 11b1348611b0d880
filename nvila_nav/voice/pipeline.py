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
- Everything else needs the wake phrase, matched loosely (`match_wake`: "herobot",
  "hey, robot", "hey robert"), and is sent only when the transcript's confidence reaches
  `min_confidence` (calibrated per backend).
- Sentence pauses do not cut an instruction: speech that resumes within
  `instruction_end_silence_s` of the end of a segment belongs to the same utterance, which is
  decoded as a whole once that silence has passed, in the recogniser's own thread.
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
from nvila_nav.voice.text import edit_distance, normalize
from nvila_nav.voice.vad import SAMPLE_RATE, SpeechSegmenter

_STOP_FILLERS = frozenset({"emergency"})
"""Words allowed next to a stop word in a stop ("emergency stop")."""


def match_wake(
    words: tuple[str, ...], wake: tuple[str, ...], tolerance: float = 0.25
) -> tuple[str, ...] | None:
    """The words after the first wake phrase, or None when there is none.

    Loose at the start, since recognisers spell a spoken name many ways: in the first two
    positions (one leading word such as "okay" allowed), the letters of the next one to
    `len(wake) + 1` words are compared with the wake phrase's letters, and an edit distance up
    to `tolerance` times its length matches ("herobot", "hey robert", "hey robots" for "hey
    robot"). Later in the utterance (another sentence ran into the instruction) only the exact
    words count, so "go to the robot" has none; what came before is left out.
    """
    if not wake:
        return words
    target = "".join(wake)
    limit = int(tolerance * len(target))
    for start in range(len(words)):
        if start >= 2:
            if words[start : start + len(wake)] == wake:
                return words[start + len(wake) :]
            continue
        best: tuple[int, int] | None = None
        for n in range(1, len(wake) + 2):
            if start + n > len(words):
                break
            distance = edit_distance("".join(words[start : start + n]), target)
            if distance <= limit and (best is None or distance < best[0]):
                best = (distance, start + n)
        if best is not None:
            return words[best[1] :]
    return None


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
    """Silence that ends an utterance (and an instruction); speech that resumes earlier
    continues it. Below the segmenter's end silence, the segmenter's decides."""


@dataclass
class PipelineStats:
    utterances: int = 0
    """Speech segments the VAD started."""
    dropped: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Job:
    """An utterance being decoded in the recogniser's thread."""

    future: Future
    speech_s: float
    silence_s: float


class VoicePipeline:
    """Feed 16 kHz mono float audio; get `Heard` decisions back. Not thread-safe.

    Speech segments separated by less than `instruction_end_silence_s` make one utterance (a
    sentence pause does not cut an instruction; the wake phrase may be anywhere in it, what
    came before is left out). The utterance is decoded once that silence has passed, in a
    thread of its own, so the VAD and the stop detector keep up with the audio meanwhile. A
    stop cancels an utterance that is still open or decoding: nothing said before a stop is
    sent after it. `close` ends the thread.
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
        self._utterance: list[np.ndarray] = []
        self._utterance_speech_s = 0.0
        self._waiting = False
        """The last segment ended; waiting for speech to resume or the end silence."""
        self._silence_s = 0.0
        self._jobs: list[_Job] = []
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="voice-decode")

    def close(self) -> None:
        self._decoder.shutdown(wait=True, cancel_futures=True)

    def feed(self, samples: np.ndarray) -> list[Heard]:
        return self._handle(self.segmenter.feed(samples))

    def flush(self) -> list[Heard]:
        """End of the stream: decide on an utterance still open or decoding."""
        heard = self._handle(self.segmenter.flush())
        final: list[Heard] = []
        if self._waiting:
            self._submit()
        while self._jobs:
            final.extend(self._finish_job())
        self._count(final)
        return heard + final

    def _count(self, heard: list[Heard]) -> None:
        for item in heard:
            self.stats.decisions[item.kind] = self.stats.decisions.get(item.kind, 0) + 1

    def _handle(self, events) -> list[Heard]:
        heard: list[Heard] = []
        for event in events:
            if event.kind == "background":
                self._on_background(event.audio)
            elif event.kind == "start":
                self.stats.utterances += 1
                self._segment = []
                self._stopped = False
                self._checking = self.stop_detector is not None
                self.denoiser.reset()
                if self._checking:
                    self.stop_detector.start()
                if not self._waiting:
                    self._utterance, self._utterance_speech_s = [], 0.0
                self._waiting = False
                self._add(event.audio)
            elif event.kind == "audio" and not self._stopped:
                self._add(event.audio, event.speech_s)
            elif event.kind == "pause" and not self._stopped:
                heard.extend(self._stop_check(event))
            elif event.kind == "end" and not self._stopped:
                if self._checking and self._speech_s <= self.config.stop_max_speech_s:
                    heard.extend(self._stop_check(event))
                if not self._stopped:
                    self._end_segment(event)
            elif event.kind == "drop":
                self.stats.dropped += 1
                if not self._stopped and self._utterance:
                    self._utterance.extend(self._segment)
                    self._waiting = True
            while self._jobs and self._jobs[0].future.done():
                heard.extend(self._finish_job())
        self._count(heard)
        return heard

    def _on_background(self, audio: np.ndarray) -> None:
        self.denoiser.observe(audio)
        seconds = len(audio) / SAMPLE_RATE
        for job in self._jobs:
            job.silence_s += seconds
        if self._waiting:
            self._utterance.append(audio)
            self._silence_s += seconds
            if self._silence_s >= self.config.instruction_end_silence_s:
                self._submit()

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
        # A stop cancels what was said before it and is not sent yet.
        self._utterance, self._waiting, self._jobs = [], False, []
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

    def _end_segment(self, event) -> None:
        self._utterance.extend(self._segment)
        self._utterance_speech_s += event.speech_s
        self._silence_s = event.silence_s
        self._waiting = True
        seconds = sum(len(a) for a in self._utterance) / SAMPLE_RATE
        if (
            self._silence_s >= self.config.instruction_end_silence_s
            or seconds >= self.segmenter.config.max_utterance_s
        ):
            self._submit()

    def _submit(self) -> None:
        """Decode the utterance in the recogniser's thread."""
        audio = np.concatenate(self._utterance)
        future = self._decoder.submit(self._decode, audio)
        self._jobs.append(_Job(future, self._utterance_speech_s, self._silence_s))
        self._utterance, self._waiting = [], False

    def _decode(self, audio: np.ndarray) -> tuple[Transcript, float]:
        started = time.monotonic()
        self.recognizer.start()
        self.recognizer.feed(_pcm(audio))
        transcript = self.recognizer.finish()
        return transcript, time.monotonic() - started

    def _finish_job(self) -> list[Heard]:
        """The decision on the oldest utterance decoded or decoding (waits for it)."""
        job = self._jobs.pop(0)
        transcript, decode_s = job.future.result()
        timing = {"silence_s": job.silence_s, "speech_s": job.speech_s, "decode_s": decode_s}
        meaning = self.interpreter.interpret(transcript.words)
        if meaning.kind == "stop":
            if transcript.confidence >= self.config.stop_min_confidence:
                return [Heard("stop", transcript, **timing)]
            return [Heard("rejected", transcript, reason="stop with low confidence", **timing)]
        if meaning.kind == "ignored":
            return [Heard("rejected", transcript, reason=meaning.reason, **timing)]
        return [self._instruction(transcript, meaning.words, **timing)]

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
