"""Fixtures for the voice tests: espeak-ng speech, shared recognisers, a DDS domain per test.

Speech is synthesised with espeak-ng (installed by scripts/setup_env.sh) in several of its
voices, so the recogniser is scored on more than one speaker. The pocketsphinx recogniser and
the stop detector take a second or two to build their language models, and Whisper to load,
so one instance of each serves the whole session.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

from nvila_nav.voice.audio import read_wav
from nvila_nav.voice.pipeline import CommandInterpreter, PipelineConfig, VoicePipeline
from nvila_nav.voice.recognizers import PocketsphinxRecognizer, make_recognizer
from nvila_nav.voice.stopword import StopDetector
from nvila_nav.voice.vad import SAMPLE_RATE, SileroVad, SpeechSegmenter

VOICES = ("en-us", "en-us+f2", "en-us+klatt", "en-us+m3")
"""espeak-ng's American English voice and three of its variants (female, Klatt, male 3)."""


@pytest.fixture(scope="session")
def speak(tmp_path_factory):
    """speak(text, voice) → 16 kHz mono float32 speech."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup_env.sh installs it)")
    folder = tmp_path_factory.mktemp("speech")
    count = iter(range(10**6))

    def synthesize(text: str, voice: str = VOICES[0]) -> np.ndarray:
        path = folder / f"{next(count)}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        return read_wav(path)

    return synthesize


@pytest.fixture(scope="session")
def voices() -> tuple[str, ...]:
    return VOICES


@pytest.fixture(scope="session")
def silence():
    """silence(seconds) → that many seconds of digital silence at 16 kHz."""

    def make(seconds: float) -> np.ndarray:
        return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)

    return make


@pytest.fixture(scope="session")
def recognizer():
    return PocketsphinxRecognizer(fallback_below=PipelineConfig().min_confidence)


@pytest.fixture(scope="session")
def stop_detector():
    return StopDetector()


@pytest.fixture(scope="session")
def whisper():
    """The default recogniser: faster-whisper with the Whisper model installed as a package."""
    return make_recognizer("faster_whisper")


@pytest.fixture
def pipeline(recognizer, stop_detector):
    """A fresh VAD and segmenter around the shared pocketsphinx recogniser and stop detector,
    default thresholds."""
    return VoicePipeline(
        SpeechSegmenter(SileroVad()),
        recognizer,
        CommandInterpreter(),
        stop_detector=stop_detector,
    )


@pytest.fixture
def whisper_pipeline(whisper, stop_detector):
    """The same with the default recogniser (Whisper) and its calibrated threshold."""
    from nvila_nav.voice.recognizers import CALIBRATED_MIN_CONFIDENCE

    return VoicePipeline(
        SpeechSegmenter(SileroVad()),
        whisper,
        CommandInterpreter(),
        PipelineConfig(min_confidence=CALIBRATED_MIN_CONFIDENCE["faster_whisper"]),
        stop_detector=stop_detector,
    )


@pytest.fixture
def ros_domain_id(request) -> int:
    """A DDS domain per test process and test, so parallel or repeated runs never meet."""
    return 1 + (os.getpid() + hash(request.node.nodeid) % 50) % 100
