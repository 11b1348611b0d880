"""The voice pipeline on speech that is not the simulator's templates, with real recognisers on
espeak-ng speech: the stop detector in noise and on near misses, the loose wake phrase,
instructions across sentence pauses, the bundled Whisper model, teleop commands, the denoiser."""

import subprocess

import numpy as np
import pytest

from nvila_nav.voice.commands import canonical_instruction
from nvila_nav.voice.pipeline import match_wake
from nvila_nav.voice.recognizers import bundled_whisper_model, transcribe
from nvila_nav.voice.stopword import Denoiser
from nvila_nav.voice.text import normalize, word_errors
from nvila_nav.voice.vad import SAMPLE_RATE


def decide(pipeline, audio):
    return pipeline.feed(audio) + pipeline.flush()


def with_white_noise(speech: np.ndarray, snr_db: float, lead_s: float = 1.0) -> np.ndarray:
    """Lead silence + speech + tail, white noise throughout at `snr_db` against the speech."""
    audible = np.nonzero(np.abs(speech) > 1e-3)[0]
    power = float(np.mean(speech[audible[0] : audible[-1] + 1] ** 2))
    audio = np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE)), speech, np.zeros(16000)])
    noise = np.random.default_rng(0).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), len(audio))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


@pytest.mark.parametrize(
    ("words", "voice"),
    [
        ("stop", "en-gb"),
        ("halt", "en-us+f2"),
        ("freeze", "en-gb-scotland"),
        ("emergency stop", "en-us"),
    ],
)
def test_stop_phrases_fire_early_in_10_db_noise(speak, pipeline, words, voice):
    heard = decide(pipeline, with_white_noise(speak(words, voice), snr_db=10.0))
    assert [h.kind for h in heard] == ["stop"]
    assert heard[0].early and heard[0].transcript.search == "stop_detector"
    assert heard[0].silence_s < 0.3  # audio time: decided at the first short pause


@pytest.mark.parametrize(
    "text", ["Follow me.", "hey robot, stop at the red chair", "hey robot, turn left"]
)
def test_near_misses_and_instructions_do_not_stop(speak, pipeline, silence, text):
    heard = decide(pipeline, np.concatenate([silence(0.5), speak(text, "en-gb"), silence(1.5)]))
    assert "stop" not in [h.kind for h in heard], heard


def test_wake_phrase_matches_the_ways_recognisers_spell_it():
    wake = ("hey", "robot")
    for heard in (
        "herobot go",
        "hey robert go",
        "hey robots go",
        "okay hey robot go",
        "see you later hey robot go",
    ):
        assert match_wake(tuple(heard.split()), wake) == ("go",), heard
    for heard in ("hello world go", "go to the robot", "turn left"):
        assert match_wake(tuple(heard.split()), wake) is None, heard


def test_an_instruction_continues_across_a_sentence_pause(speak, pipeline, silence):
    """Two sentences 0.7 s apart (longer than the 0.5 s that ends a segment): the second one,
    which names the goal and has no wake phrase, is part of the same instruction."""
    first = speak("hey robot, exit the bedroom and turn left.", "en-us")
    second = speak("walk to the blue sofa.", "en-us")
    audio = np.concatenate([silence(0.5), first, silence(0.7), second, silence(1.5)])
    heard = decide(pipeline, audio)
    assert [h.kind for h in heard] == ["instruction"], heard
    assert "blue sofa" in heard[0].instruction.lower()
    assert heard[0].instruction.lower().startswith("exit the bedroom")


def test_speech_after_a_long_silence_is_a_new_utterance(speak, pipeline, silence):
    first = speak("hey robot, turn left.", "en-us")
    second = speak("walk to the blue sofa.", "en-us")
    audio = np.concatenate([silence(0.5), first, silence(1.6), second, silence(1.5)])
    heard = decide(pipeline, audio)
    assert [(h.kind, h.reason) for h in heard] == [
        ("instruction", ""),
        ("rejected", "no wake phrase"),
    ]


def test_bundled_whisper_transcribes_natural_phrasing_offline(speak, whisper):
    """The default backend's model comes from an installed package directory, not a hub."""
    assert (bundled_whisper_model() / "model.bin").is_file()
    reference = "hey robot, walk past the couch and wait by the plant"
    pcm = (speak(reference, "en-gb") * 32767).astype(np.int16)
    transcript = transcribe(whisper, pcm)
    errors, _ = word_errors(reference, transcript.text)
    assert errors <= 2, transcript
    assert "plant" in transcript.words
    assert transcript.confidence > 0.5


def test_whisper_pipeline_publishes_a_teleop_command_in_grammar_words(
    speak, whisper_pipeline, silence
):
    audio = np.concatenate(
        [silence(0.5), speak("hey robot, go forward two meters", "en-gb"), silence(1.5)]
    )
    heard = decide(whisper_pipeline, audio)
    assert [h.kind for h in heard] == ["instruction"], heard
    assert heard[0].instruction == "Move forward 200 cm."
    assert heard[0].command == "move forward 75 cm, move forward 75 cm, move forward 50 cm"


@pytest.mark.parametrize(
    ("spoken", "instruction", "command"),
    [
        (
            "turn left ninety degrees",
            "Turn left 90 degrees.",
            "turn left 45 degrees, turn left 45 degrees",
        ),
        ("turn around", "Turn left 180 degrees.", ", ".join(["turn left 45 degrees"] * 4)),
        ("back up a little", "Move backward 25 cm.", ""),
        (
            "move forward one meter",
            "Move forward 100 cm.",
            "move forward 75 cm, move forward 25 cm",
        ),
        ("walk to the red chair", "Walk to the red chair.", ""),
    ],
)
def test_teleop_commands_become_grammar_instructions(spoken, instruction, command):
    assert canonical_instruction(normalize(spoken).split()) == (instruction, command)


def band_power(audio: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / SAMPLE_RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_denoiser_removes_hum_and_keeps_speech(speak):
    speech = speak("walk to the kitchen", "en-us")
    t = np.arange(len(speech)) / SAMPLE_RATE
    hum = (0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    cleaned = Denoiser().process(speech + hum)
    delay = Denoiser.N_FFT - Denoiser.HOP
    out, reference = cleaned[delay:], speech[: len(cleaned) - delay]
    assert band_power(out, 40, 60) < 0.01 * band_power(hum[: len(out)], 40, 60)
    kept = band_power(out, 300, 3400) / band_power(reference, 300, 3400)
    assert 0.9 < kept < 1.1


def test_espeak_voices_used_by_the_benchmark_exist():
    voices = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
    for voice in ("en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp"):
        assert voice in voices


def test_a_stop_right_after_an_instruction_cancels_it(speak, whisper_pipeline, silence):
    """The stop detector keeps listening while the instruction is decoded in its own thread."""
    instruction = speak("hey robot, go to the kitchen", "en-gb")
    audio = np.concatenate(
        [silence(0.5), instruction, silence(0.6), speak("stop", "en-us"), silence(1.5)]
    )
    heard = decide(whisper_pipeline, audio)
    assert [h.kind for h in heard] == ["stop"], heard
    assert heard[0].early
