"""PCM decoding, resampling, WAV files and their real-time playback."""

import threading
import time
import wave

import numpy as np
import pytest

from nvila_nav.voice.audio import (
    Resampler,
    WavFileSource,
    pcm_to_float,
    read_wav,
    write_wav,
)


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate)).astype(
        np.float32
    )


def test_pcm_formats_decode_to_the_same_float_signal():
    signal = np.array([0.0, 0.5, -0.5, 0.25], dtype=np.float32)
    s16 = (signal * 32768).astype("<i2").tobytes()
    assert np.allclose(pcm_to_float(s16, "s16le"), signal)
    assert np.allclose(pcm_to_float((signal * 128 + 128).astype(np.uint8), "u8"), signal)
    assert np.allclose(pcm_to_float((signal * 128).astype(np.int8).tobytes(), "s8"), signal)
    assert np.allclose(pcm_to_float(signal.astype("<f4").tobytes(), "f32le"), signal)
    stereo = np.stack([signal, -signal], axis=1).ravel()
    assert np.allclose(pcm_to_float((stereo * 32768).astype("<i2").tobytes(), "s16le", 2), 0.0)
    with pytest.raises(ValueError, match="sample format"):
        pcm_to_float(s16, "mp3")


def test_streaming_resampler_keeps_duration_and_pitch():
    resample = Resampler(22050)
    source = tone(22050, 1.0)
    chunks = [resample(chunk) for chunk in np.array_split(source, 37)]
    out = np.concatenate([*chunks, resample(np.zeros(0, np.float32), last=True)])
    assert abs(len(out) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(out[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_wav_files_of_any_rate_and_channels_read_as_16_khz_mono(tmp_path):
    path = write_wav(tmp_path / "tone.wav", tone(16000, 0.5))
    assert np.allclose(read_wav(path), tone(16000, 0.5), atol=1e-4)
    stereo_path = tmp_path / "stereo.wav"
    left = (tone(44100, 0.5) * 32767).astype("<i2")
    with wave.open(str(stereo_path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(44100)
        f.writeframes(np.stack([left, left], axis=1).tobytes())
    assert abs(len(read_wav(stereo_path)) - 8000) <= 2


def test_wav_source_plays_in_real_time_then_ends(tmp_path):
    path = write_wav(tmp_path / "tone.wav", tone(16000, 0.5))
    received, arrivals, ended = [], [], threading.Event()

    def on_audio(samples, arrival):
        received.append(samples)
        arrivals.append(arrival)

    source = WavFileSource(path, on_audio, ended.set)
    source.start()
    assert ended.wait(5.0)
    assert sum(len(c) for c in received) == 8000
    assert arrivals[-1] - source.started_at == pytest.approx(0.5, abs=0.1)
    fast, fast_end = [], threading.Event()
    started = time.monotonic()
    WavFileSource(path, lambda s, _t: fast.append(s), fast_end.set, realtime=False).start()
    assert fast_end.wait(5.0) and time.monotonic() - started < 0.4
