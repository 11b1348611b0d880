"""The stop detector: keyword spotting on every speech segment, independent of the recogniser.

A dedicated pocketsphinx decoder (`StopDetector`) runs on every short speech segment at its first
pause, whatever recogniser serves the instructions and whatever its confidence: "stop", "halt",
"freeze" or "emergency stop" alone (optionally after the wake phrase, optionally repeated) is a
stop. It decodes as the segment arrives, so the decision is ready a few milliseconds after the
pause.

The audio goes through `Denoiser` first: a high-pass filter (mains hum and rumble) and spectral
subtraction of the noise floor measured between utterances (steady fans, hiss).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nvila_nav.voice import language
from nvila_nav.voice.text import normalize

STOP_PHRASES = ("stop", "halt", "freeze", "emergency stop")
"""What stops the robot, alone in a speech segment (optionally after the wake phrase)."""
_STOP_WORD_SET = frozenset(w for phrase in STOP_PHRASES for w in phrase.split())


@dataclass(frozen=True)
class StopCheck:
    stop: bool
    words: tuple[str, ...]
    decode_s: float = 0.0
    confidence: float = 0.0
    """The lowest posterior of the stop words (0 when not a stop)."""


_STOP_REPEATS = 50


class StopDetector:
    """Decides whether a short speech segment is a stop phrase, and nothing else.

    A pocketsphinx decoder of its own with an n-gram model of the stop phrases (many times,
    with and without the wake phrase, and repeated) and the navigation language (simulator
    instructions and commands, nvila_nav/voice/language.py). It decodes as audio arrives
    (`start`, `feed`), so `finish` at the first pause takes a few milliseconds. A segment is a
    stop when its words, the wake phrase removed, are stop phrases and nothing else: "stop at
    the red chair" decodes as the instruction it is and never fires.
    """

    def __init__(self, wake_phrase: str = language.DEFAULT_WAKE_PHRASE):
        import pocketsphinx

        model_dir = Path(pocketsphinx.get_model_path()) / "en-us"
        self._files = tempfile.TemporaryDirectory(prefix="nvila-stop-")
        folder = Path(self._files.name)
        wake = " ".join(normalize(wake_phrase).split())
        cmudict = str(model_dir / "cmudict-en-us.dict")
        sentences = [
            *language.lm_sentences(wake_phrase, language.read_corpus()),
            *(phrase for phrase in STOP_PHRASES for _ in range(_STOP_REPEATS)),
            *(f"{wake} {phrase}" for phrase in STOP_PHRASES for _ in range(_STOP_REPEATS // 5)),
            *(f"{phrase} {phrase}" for phrase in STOP_PHRASES for _ in range(_STOP_REPEATS // 5)),
        ]
        (folder / "stop.arpa").write_text(language.build_arpa(sentences), encoding="utf-8")
        words = {w for sentence in sentences for w in sentence.split()}
        (folder / "stop.dict").write_text(language.dictionary(words, cmudict), encoding="utf-8")
        self._decoder = pocketsphinx.Decoder(
            hmm=str(model_dir / "en-us"),
            samprate=16000,
            dither=True,
            seed=1,
            loglevel="FATAL",
            lm=str(folder / "stop.arpa"),
            dict=str(folder / "stop.dict"),
            fwdflat=False,  # the first pass is enough for a few words, and ends at once
        )
        self._wake = tuple(wake.split())

    def start(self) -> None:
        self._decoder.start_utt()

    def feed(self, pcm: np.ndarray) -> None:
        """16 kHz int16 audio of the current segment."""
        self._decoder.process_raw(pcm.astype(np.int16).tobytes())

    def finish(self) -> StopCheck:
        started = time.monotonic()
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        words = () if hyp is None else _words(hyp.hypstr)
        stop = self.is_stop_phrase(words)
        posteriors = [
            seg.prob
            for seg in self._decoder.seg() or ()
            if re.sub(r"\(\d+\)$", "", seg.word) in _STOP_WORD_SET
        ]
        confidence = float(min(posteriors)) if stop and posteriors else 0.0
        return StopCheck(stop, words, time.monotonic() - started, confidence)

    def is_stop_phrase(self, words: tuple[str, ...]) -> bool:
        n = len(self._wake)
        rest = words[n:] if n and words[:n] == self._wake else words
        return bool(rest) and all(w in _STOP_WORD_SET for w in rest)

    def check(self, pcm: np.ndarray) -> StopCheck:
        """One whole segment of 16 kHz int16 audio."""
        self.start()
        self.feed(pcm)
        return self.finish()


def _words(hypothesis: str) -> tuple[str, ...]:
    """Decoded words, fillers and alternate-pronunciation marks dropped."""
    return tuple(
        re.sub(r"\(\d+\)$", "", w)
        for w in hypothesis.split()
        if not (w.startswith("<") or w.startswith("[") or w.startswith("++"))
    )


class Denoiser:
    """High-pass filter and spectral subtraction for 16 kHz float audio, streaming.

    `observe` takes audio the VAD called non-speech and keeps a running noise spectrum;
    `process` cleans audio chunk by chunk (256 samples of delay; `reset` between segments).
    With no noise observed it only high-passes (mains hum, rumble).
    """

    N_FFT = 512
    HOP = 256

    def __init__(self, cutoff_hz: float = 120.0, over_subtraction: float = 1.5, floor: float = 0.1):
        self._window = np.sqrt(np.hanning(self.N_FFT + 1)[:-1]).astype(np.float32)
        freqs = np.fft.rfftfreq(self.N_FFT, 1.0 / 16000)
        self._highpass = (freqs >= cutoff_hz).astype(np.float32)
        self._noise: np.ndarray | None = None
        self.over_subtraction = over_subtraction
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        self._input = np.zeros(self.N_FFT - self.HOP, np.float32)
        self._output = np.zeros(self.N_FFT, np.float32)

    def observe(self, audio: np.ndarray) -> None:
        count = len(audio) // self.N_FFT
        if count == 0:
            return
        frames = audio[: count * self.N_FFT].reshape(count, self.N_FFT) * self._window
        power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
        self._noise = power if self._noise is None else 0.95 * self._noise + 0.05 * power

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Cleaned audio, as much as is complete (a multiple of 256 samples)."""
        self._input = np.concatenate([self._input, audio.astype(np.float32)])
        out = []
        while len(self._input) >= self.N_FFT:
            frame = self._input[: self.N_FFT] * self._window
            self._input = self._input[self.HOP :]
            spectrum = np.fft.rfft(frame)
            gain = self._highpass.copy()
            if self._noise is not None:
                power = np.abs(spectrum) ** 2
                clean = np.maximum(power - self.over_subtraction * self._noise, self.floor * power)
                gain *= np.sqrt(clean / np.maximum(power, 1e-12))
            self._output += np.fft.irfft(spectrum * gain, n=self.N_FFT) * self._window
            out.append(self._output[: self.HOP].copy())
            self._output = np.concatenate(
                [self._output[self.HOP :], np.zeros(self.HOP, np.float32)]
            )
        return np.concatenate(out) if out else np.zeros(0, np.float32)
