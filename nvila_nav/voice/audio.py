"""Audio in: PCM decoding, resampling to 16 kHz mono, WAV files and the microphone.

Every source calls `on_audio(samples, arrival_s)` with float32 16 kHz mono samples in [-1, 1]
and the time.monotonic() at which they became available, which is what end-of-speech latency
is measured against. sounddevice (and its PortAudio library) is imported only when the
microphone is opened, so everything else works on machines without audio hardware.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nvila_nav.voice.vad import SAMPLE_RATE

AudioCallback = Callable[[np.ndarray, float], None]
SAMPLE_FORMATS = ("s16le", "u8", "s8", "f32le")
"""Formats of the bytes in a std_msgs/UInt8MultiArray audio message (s16le: audio_common)."""


def pcm_to_float(data: bytes | np.ndarray, sample_format: str, channels: int = 1) -> np.ndarray:
    """Interleaved PCM → mono float32 in [-1, 1] (channels averaged)."""
    buffer = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if sample_format == "s16le":
        samples = np.frombuffer(buffer, dtype="<i2").astype(np.float32) / 32768.0
    elif sample_format == "u8":
        samples = (np.frombuffer(buffer, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_format == "s8":
        samples = np.frombuffer(buffer, dtype=np.int8).astype(np.float32) / 128.0
    elif sample_format == "f32le":
        samples = np.frombuffer(buffer, dtype="<f4").astype(np.float32)
    else:
        raise ValueError(f"sample format {sample_format!r} is not one of {SAMPLE_FORMATS}")
    if channels > 1:
        usable = len(samples) - len(samples) % channels
        samples = samples[:usable].reshape(-1, channels).mean(axis=1)
    return samples


class Resampler:
    """Streaming conversion to 16 kHz (soxr); a pass-through at 16 kHz."""

    def __init__(self, rate: int):
        self.rate = rate
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples.astype(np.float32)
        return self._stream.resample_chunk(samples.astype(np.float32), last=last)


def read_wav(path: str | Path) -> np.ndarray:
    """A PCM WAV file (8/16/32-bit, any rate, any channels) as 16 kHz mono float32."""
    with wave.open(str(path), "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width == 1:
        samples = pcm_to_float(raw, "u8", channels)
    elif width == 2:
        samples = pcm_to_float(raw, "s16le", channels)
    elif width == 4:
        ints = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
        samples = ints.reshape(-1, channels).mean(axis=1) if channels > 1 else ints
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported")
    return Resampler(rate)(samples, last=True)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Mono float samples as a 16-bit PCM WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return Path(path)


class WavFileSource:
    """Plays a WAV file into `on_audio` in 20 ms chunks, paced in real time (or as fast as the
    consumer takes it), then calls `on_end`."""

    CHUNK = 320

    def __init__(
        self,
        path: str | Path,
        on_audio: AudioCallback,
        on_end: Callable[[], None],
        realtime: bool = True,
    ):
        self.samples = read_wav(path)
        self._on_audio = on_audio
        self._on_end = on_end
        self._realtime = realtime
        self._stop = threading.Event()
        self.started_at: float | None = None
        """time.monotonic() at which sample 0 was played (the clock for the file's timeline)."""
        self._thread = threading.Thread(target=self._play, name="voice-wav", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _play(self) -> None:
        self.started_at = time.monotonic()
        for begin in range(0, len(self.samples), self.CHUNK):
            end = min(begin + self.CHUNK, len(self.samples))
            due = self.started_at + end / SAMPLE_RATE
            if self._realtime and self._stop.wait(max(0.0, due - time.monotonic())):
                return
            if self._stop.is_set():
                return
            self._on_audio(self.samples[begin:end], time.monotonic())
        self._on_end()


class MicrophoneSource:
    """The default (or named) input device through sounddevice/PortAudio."""

    def __init__(self, on_audio: AudioCallback, device: str = "", rate: int = SAMPLE_RATE):
        try:
            import sounddevice
        except (ImportError, OSError) as error:  # OSError: PortAudio is missing
            raise RuntimeError(
                f"microphone input needs sounddevice and PortAudio (apt-get install libportaudio2): "
                f"{error}"
            ) from error
        self._on_audio = on_audio
        self._resample = Resampler(rate)
        try:
            self._stream = sounddevice.InputStream(
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=int(rate * 0.02),
                device=(int(device) if device.isdigit() else device) or None,
                callback=self._callback,
            )
        except sounddevice.PortAudioError as error:
            raise RuntimeError(
                f"cannot open microphone {device or '(default)'} at {rate} Hz: {error}; "
                "`python -m sounddevice` lists the input devices"
            ) from error

    def _callback(self, indata, _frames, _time, _status) -> None:
        self._on_audio(self._resample(indata[:, 0].copy()), time.monotonic())

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
