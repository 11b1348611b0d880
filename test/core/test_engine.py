"""Engine: the per-frame feature cache skips the ViT for seen frames and changes no output."""

import pytest
import torch

from nvila_core.model.configuration import ConfigError
from nvila_core.model.image_processing import plan_image
from nvila_core.runtime.engine import (
    Engine,
    FrameFeatureCache,
    TorchBackend,
    content_key,
    make_backend,
)
from nvila_core.runtime.prompt_prefix import shared_rows

INSTRUCTION = "walk past the sofa and stop at the kitchen door"


@pytest.fixture
def engines(tiny_model, tiny_tokenizer):
    """(cached, uncached) engines over the same model."""
    backend = TorchBackend(tiny_model)
    cached = Engine(backend, tiny_model.config, tiny_tokenizer, cache_frames=64)
    uncached = Engine(backend, tiny_model.config, tiny_tokenizer, cache_frames=0)
    return cached, uncached


def test_navigate_over_a_growing_history_encodes_only_the_new_frame(engines, make_frames):
    cached, uncached = engines
    history = make_frames(11)
    for step in range(1, len(history) + 1):
        frames, keys = history[:step], list(range(step))
        fast = cached.navigate(INSTRUCTION, frames, keys, max_new_tokens=6, output_logits=True)
        slow = uncached.navigate(INSTRUCTION, frames, max_new_tokens=6, output_logits=True)
        if step == 1:
            # The current frame and one black padding frame (the 7 pads are identical).
            assert fast.timings["vit_passes"] == 2
        else:
            assert fast.timings["vit_passes"] == 1
            assert fast.timings["cached_frames"] == 7
        assert slow.timings["vit_passes"] == 8 and slow.timings["cached_frames"] == 0
        assert fast.token_ids == slow.token_ids and fast.text == slow.text
        torch.testing.assert_close(fast.logits, slow.logits, rtol=0, atol=1e-5)
    info = cached.cache_info()
    assert info["size"] == len(history) + 1  # every frame plus the black padding frame
    assert info["misses"] == len(history) + 1
    assert info["hits"] > 0


def test_frames_without_keys_are_cached_by_content(engines, make_frames):
    cached, _ = engines
    frames = make_frames(9)
    cached.generate("Describe the frames.", frames=frames[:8], max_new_tokens=2)
    again = cached.generate("Describe the frames.", frames=frames[1:9], max_new_tokens=2)
    assert again.timings["vit_passes"] == 1
    assert again.timings["cached_frames"] == 7


def test_video_frames_are_cached_per_frame(engines, make_frames):
    cached, uncached = engines
    frames = make_frames(5)
    cached.generate("What happens?", video=frames[:4], video_keys=[0, 1, 2, 3], max_new_tokens=3)
    fast = cached.generate(
        "What happens?", video=frames[1:5], video_keys=[1, 2, 3, 4], max_new_tokens=3
    )
    slow = uncached.generate("What happens?", video=frames[1:5], max_new_tokens=3)
    assert fast.timings["vit_passes"] == 1
    assert fast.token_ids == slow.token_ids


def test_images_bypass_the_frame_cache(engines, make_frames):
    cached, _ = engines
    image = make_frames(1, height=48, width=64)[0]
    result = cached.generate("Describe the scene.", images=[image], max_new_tokens=2)
    assert result.timings["vit_passes"] == plan_image(cached.config, 64, 48).vit_passes
    assert cached.cache_info()["size"] == 0


def test_lru_cache_is_bounded_and_counts():
    cache = FrameFeatureCache(max_frames=2)
    for key in "abc":
        assert cache.get(key) is None
        cache.put(key, torch.zeros(1))
    assert cache.get("a") is None  # evicted first
    assert cache.get("c") is not None
    assert cache.info() == {"hits": 1, "misses": 4, "size": 2, "max_frames": 2}
    cache.clear()
    assert len(cache) == 0 and cache.info()["misses"] == 0
    with pytest.raises(ValueError, match="max_frames"):
        FrameFeatureCache(-1)


def test_content_key_depends_on_pixels_and_shape():
    pixels = torch.zeros(3, 4, 4)
    assert content_key(pixels) == content_key(pixels.clone())
    assert content_key(pixels) != content_key(pixels + 1)
    assert content_key(pixels) != content_key(torch.zeros(3, 2, 8))


def test_unknown_backend_lists_the_known_ones(tiny_model):
    with pytest.raises(ValueError, match=r"unknown backend 'onnx' \(known: torch\)"):
        make_backend("onnx", tiny_model)


def test_from_pretrained_preset_and_checkpoint(tiny_checkpoint, make_frames, caplog):
    with caplog.at_level("WARNING"):
        preset = Engine.from_pretrained("tiny", seed=0)
    assert "RANDOM weights" in caplog.text
    loaded = Engine.from_pretrained(tiny_checkpoint)
    frames = make_frames(3)
    result = loaded.navigate(INSTRUCTION, frames, max_new_tokens=4)
    assert result.stopped_by in ("stop_token", "max_new_tokens")
    assert preset.backend.name == loaded.backend.name == "torch"
    with pytest.raises(ConfigError, match="neither a checkpoint folder nor a model preset"):
        Engine.from_pretrained("no-such-model")


@pytest.mark.parametrize("decoding", ["generate", "choose"])
def test_a_prompt_prefills_only_from_where_it_stops_matching_the_last_one(
    tiny_model, tiny_tokenizer, make_frames, decoding
):
    """Consecutive decisions share the system text and the episode's first frame: their KV
    comes from the last prompt, and the outputs equal a full prefill's."""
    reusing = Engine(TorchBackend(tiny_model), tiny_model.config, tiny_tokenizer)
    full_backend = TorchBackend(tiny_model)
    full_backend.prompt_prefix.enabled = False
    full = Engine(full_backend, tiny_model.config, tiny_tokenizer)
    answers = [
        reusing.processor.navigation_answer(a)
        for a in ("move forward 75 cm", "turn left 30 degrees", "stop")
    ]
    options = {"answers": answers} if decoding == "choose" else {"max_new_tokens": 6}
    history = make_frames(12)
    reused = []
    for step in range(9, 13):
        frames, keys = history[:step], list(range(step))
        ours = reusing.navigate(INSTRUCTION, frames, keys, output_logits=True, **options)
        ref = full.navigate(INSTRUCTION, frames, keys, output_logits=True, **options)
        assert ours.text == ref.text and ref.timings["reused_prompt_tokens"] == 0
        if decoding == "choose":
            got, want = ours.answer_log_probs, ref.answer_log_probs
        else:
            got, want = ours.logits, ref.logits
        torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want), rtol=0, atol=1e-4)
        assert ours.timings["prompt_tokens"] == ref.timings["prompt_tokens"]
        reused.append(ours.timings["reused_prompt_tokens"])
    prompt = ours.timings["prompt_tokens"]
    assert reused[0] == 0 and all(0 < r < prompt for r in reused[1:])
    reusing.clear_cache()  # a new episode: nothing kept
    again = reusing.navigate(INSTRUCTION, frames, keys, **options)
    assert again.timings["reused_prompt_tokens"] == 0


def test_shared_rows_counts_equal_leading_rows():
    a = torch.arange(12.0).view(4, 3)
    b = a.clone()
    b[2, 1] = -1
    assert shared_rows(a, b) == 2
    assert shared_rows(a, a[:3]) == 3
    assert shared_rows(a.numpy(), b.numpy()) == 2
