"""Speech → decisions offline, on espeak-ng speech: word error rate, silence, noise, stop, wake
phrase, confidence, and backend selection."""

import time

import numpy as np
import pytest

from nvila_nav.sim.episodes import generate_episodes
from nvila_nav.voice.pipeline import CommandInterpreter, PipelineConfig, VoicePipeline
from nvila_nav.voice.recognizers import (
    PocketsphinxRecognizer,
    RecognizerUnavailable,
    make_recognizer,
    transcribe,
)
from nvila_nav.voice.text import word_errors
from nvila_nav.voice.vad import SileroVad, SpeechSegmenter

N_UTTERANCES = 24
MAX_WER = 0.15


def decide(pipeline, audio):
    return pipeline.feed(audio) + pipeline.flush()


def test_spoken_simulator_instructions_are_recognised_with_low_word_error_rate(
    speak, pipeline, silence, voices
):
    """val_unseen instructions (scenes the language model's train corpus never saw), spoken by
    four espeak-ng voices in turn after the wake phrase; scored on what would be published."""
    episodes = generate_episodes("val_unseen", N_UTTERANCES, seed=0)
    errors: dict[str, list[int]] = {voice: [0, 0] for voice in voices}
    report = []
    started = time.monotonic()
    for i, episode in enumerate(episodes):
        voice = voices[i % len(voices)]
        reference = episode.instruction_text
        audio = np.concatenate(
            [silence(0.5), speak(f"hey robot, {reference}", voice), silence(0.8)]
        )
        heard = decide(pipeline, audio)
        hypothesis = " ".join(h.instruction for h in heard if h.kind == "instruction")
        e, n = word_errors(reference, hypothesis)
        errors[voice][0] += e
        errors[voice][1] += n
        if e:
            report.append(f"{voice} {e}/{n}: {reference!r} -> {hypothesis!r}")
    total_errors = sum(e for e, _ in errors.values())
    total_words = sum(n for _, n in errors.values())
    wer = total_errors / total_words
    per_voice = ", ".join(f"{v} {e / n:.1%}" for v, (e, n) in errors.items())
    summary = (
        f"WER {wer:.1%} over {N_UTTERANCES} utterances, {total_words} words ({per_voice}); "
        f"{time.monotonic() - started:.1f} s\n" + "\n".join(report)
    )
    print(summary)
    assert wer <= MAX_WER, summary


def test_silence_and_noise_never_reach_the_recogniser(pipeline, silence):
    rng = np.random.default_rng(0)
    white = rng.normal(0.0, 0.05, 48000).astype(np.float32)
    loud = rng.normal(0.0, 0.3, 48000).astype(np.float32)
    brown = np.cumsum(rng.normal(0.0, 1.0, 48000)).astype(np.float32)
    brown = 0.2 * brown / np.abs(brown).max()
    hum = 0.3 * np.sin(2 * np.pi * 50.0 * np.arange(48000) / 16000).astype(np.float32)
    for audio in (silence(3.0), white, loud, brown, hum):
        assert decide(pipeline, audio) == []
    assert pipeline.stats.utterances == 0


def test_speech_without_the_wake_phrase_sends_nothing(speak, pipeline, silence):
    heard = decide(pipeline, np.concatenate([speak("walk to the red chair"), silence(0.8)]))
    assert [(h.kind, h.reason) for h in heard] == [("rejected", "no wake phrase")]


@pytest.mark.parametrize(("words", "voice"), [("stop", "en-us"), ("halt", "en-us+f2")])
def test_stop_fires_at_the_first_pause_without_the_wake_phrase(
    speak, pipeline, silence, words, voice
):
    heard = decide(pipeline, np.concatenate([silence(0.5), speak(words, voice), silence(1.0)]))
    assert [h.kind for h in heard] == ["stop"]
    (stop,) = heard
    assert stop.early, "the stop should not wait for the end of the utterance"
    assert stop.silence_s < 0.3  # audio time: decided at the first short pause


def test_an_instruction_that_starts_with_stop_is_not_a_stop(speak, pipeline, silence):
    speech = speak("hey robot, stop next to the blue sofa")
    heard = decide(pipeline, np.concatenate([speech, silence(0.8)]))
    assert [h.kind for h in heard] == ["instruction"]
    assert heard[0].instruction == "Stop next to the blue sofa."


def test_low_confidence_results_are_not_sent(speak, recognizer, silence):
    strict = VoicePipeline(
        SpeechSegmenter(SileroVad()),
        recognizer,
        CommandInterpreter(),
        PipelineConfig(min_confidence=0.999),
    )
    heard = decide(strict, np.concatenate([speak("hey robot, turn left"), silence(0.8)]))
    assert [h.kind for h in heard] == ["rejected"]
    assert heard[0].reason.startswith("confidence ")
    assert heard[0].transcript.text == "hey robot turn left"


def test_whisper_backends_never_download(tmp_path):
    with pytest.raises(RecognizerUnavailable, match="needs model_path"):
        make_recognizer("whisper")
    for backend in ("faster_whisper", "whisper"):
        with pytest.raises(RecognizerUnavailable, match="does not exist"):
            make_recognizer(backend, str(tmp_path / "missing"))
    with pytest.raises(RecognizerUnavailable, match=r"no model\.bin"):
        make_recognizer("faster_whisper", str(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"not loaded")  # a pickle checkpoint is refused, unread
    with pytest.raises(RecognizerUnavailable, match="never unpickled"):
        make_recognizer("whisper", str(tmp_path))
    with pytest.raises(ValueError, match="unknown speech backend"):
        make_recognizer("cloud")


def test_grammar_search_and_freeform_fallback_decode(speak):
    """The JSGF command grammar as the search, with every utterance also decoded free-form:
    the more confident transcript wins, so the fallback never lowers the confidence."""
    pcm = (speak("hey robot, turn left thirty degrees") * 32767).astype(np.int16)
    grammar_only = transcribe(PocketsphinxRecognizer("grammar"), pcm)
    assert grammar_only.text == "hey robot turn left thirty degrees"
    assert grammar_only.search == "grammar"
    with_fallback = transcribe(PocketsphinxRecognizer("grammar", fallback_below=1.01), pcm)
    assert with_fallback.search in ("grammar", "freeform")
    assert with_fallback.confidence >= grammar_only.confidence - 0.05
