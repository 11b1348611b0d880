"""NVILAModel: LLM construction, parameter counts, media encoding and the embedding splice."""

import dataclasses

import pytest
import torch
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from nvila_core.model.language import build_llm
from nvila_core.model.modeling import NVILAModel, newline_token_id
from nvila_core.model.processing import MediaItem, NVILAProcessor
from nvila_core.model.prompting import IMAGE_TOKEN_INDEX
from nvila_core.model.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, build_tokenizer, media_token_ids


def frame_item(config, seed: int, frames: int = 1, kind: str = "frame") -> MediaItem:
    size = config.tile_size
    generator = torch.Generator().manual_seed(seed)
    return MediaItem(kind, torch.randn(frames, 3, size, size, generator=generator))


def test_build_llm_picks_the_hf_class_and_meta_device_has_no_storage(
    tiny_config, tiny_vila15_config
):
    assert isinstance(build_llm(tiny_config), Qwen2ForCausalLM)
    llama = build_llm(tiny_vila15_config, device="meta")
    assert isinstance(llama, LlamaForCausalLM)
    assert all(p.device.type == "meta" for p in llama.parameters())
    assert llama.config._attn_implementation == "sdpa"
    assert (
        build_llm(tiny_config, attn_implementation="eager").config._attn_implementation == "eager"
    )


def test_state_dict_uses_the_single_folder_checkpoint_prefixes(tiny_model):
    prefixes = {name.split(".")[0] for name in tiny_model.state_dict()}
    assert prefixes == {"llm", "vision_tower", "mm_projector"}
    names = list(tiny_model.state_dict())
    assert any(n.startswith("vision_tower.vision_model.encoder.layers.0.") for n in names)
    assert any(n.startswith("mm_projector.layers.2.") for n in names)
    assert "llm.model.embed_tokens.weight" in names


def test_num_parameters_per_part_and_total(tiny_model):
    counts = tiny_model.num_parameters()
    assert counts["total"] == counts["llm"] + counts["vision_tower"] + counts["mm_projector"]
    assert counts["total"] == sum(p.numel() for p in tiny_model.parameters())


def test_tied_embeddings_are_counted_once(tiny_config):
    tied = dataclasses.replace(
        tiny_config, llm_config={**tiny_config.llm_config, "tie_word_embeddings": True}
    )
    untied_llm = NVILAModel.from_config(tiny_config, device="meta").num_parameters()["llm"]
    tied_model = NVILAModel.from_config(tied, device="meta")
    embedding = tied_model.llm.get_input_embeddings().weight.numel()
    assert tied_model.num_parameters()["llm"] == untied_llm - embedding


def test_random_init_is_reproducible_with_a_seed(tiny_config):
    a = NVILAModel.from_config(tiny_config, seed=3).state_dict()
    b = NVILAModel.from_config(tiny_config, seed=3).state_dict()
    c = NVILAModel.from_config(tiny_config, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["llm.model.embed_tokens.weight"], c["llm.model.embed_tokens.weight"])


def test_newline_token_id_is_the_single_id_of_a_newline(tiny_tokenizer):
    assert newline_token_id(tiny_tokenizer) == tiny_tokenizer("\n").input_ids[0]


def test_nvila_splice_positions_values_and_newlines(tiny_model, tiny_tokenizer):
    config = tiny_model.config
    image_id = media_token_ids(tiny_tokenizer)[IMAGE_TOKEN]
    assert image_id >= tiny_model.embedding_rows  # as in real NVILA: never looked up
    text = tiny_tokenizer("look here", add_special_tokens=False).input_ids
    ids = [*text, image_id, 11, 12, image_id, 13]
    media = [frame_item(config, 1), frame_item(config, 2)]
    embeds = tiny_model.embed_inputs(ids, media)

    per_frame = config.tokens_per_tile
    assert embeds.shape == (1, len(ids) - 2 + 2 * (per_frame + 1), config.llm_hidden_size)
    table = tiny_model.llm.get_input_embeddings().weight
    newline = table[tiny_model.newline_token_id]
    first = len(text)
    second = first + per_frame + 1 + 2
    with torch.no_grad():
        torch.testing.assert_close(embeds[0, :first], table[text], rtol=0, atol=0)
        for start, item in ((first, media[0]), (second, media[1])):
            features = tiny_model.frame_features(item.pixel_values)[0]
            torch.testing.assert_close(embeds[0, start : start + per_frame], features)
            torch.testing.assert_close(embeds[0, start + per_frame], newline, rtol=0, atol=0)
        torch.testing.assert_close(embeds[0, first + per_frame + 1 : second], table[[11, 12]])
        torch.testing.assert_close(embeds[0, -1], table[13], rtol=0, atol=0)


def test_vila15_splice_uses_minus_200_and_appends_no_newline(tiny_vila15_config):
    tokenizer = build_tokenizer(512, "llama_3")
    model = NVILAModel.from_config(tiny_vila15_config, seed=0, tokenizer=tokenizer)
    assert model.newline_token_id is None
    ids = [5, IMAGE_TOKEN_INDEX, 198, IMAGE_TOKEN_INDEX, 198, 7]
    media = [frame_item(tiny_vila15_config, 1), frame_item(tiny_vila15_config, 2)]
    embeds = model.embed_inputs(ids, media)
    per_frame = tiny_vila15_config.tokens_per_tile
    assert embeds.shape[1] == len(ids) - 2 + 2 * per_frame
    table = model.llm.get_input_embeddings().weight
    with torch.no_grad():
        features = model.frame_features(media[0].pixel_values)[0]
        torch.testing.assert_close(embeds[0, 1 : 1 + per_frame], features)
        # The literal "\n" after <image> is ordinary text right after the visual tokens.
        torch.testing.assert_close(embeds[0, 1 + per_frame], table[198], rtol=0, atol=0)


def test_dynamic_s2_image_through_the_processor(tiny_model, tiny_tokenizer, make_frames):
    processor = NVILAProcessor(tiny_model.config, tiny_tokenizer)
    image = make_frames(1, height=48, width=64)[0]
    inputs = processor("Describe the scene.", images=[image])
    encoded = tiny_model.encode_media_items(inputs.media)
    item = inputs.media[0]
    rows, cols = item.block_size
    tokens = tiny_model.config.tokens_per_tile * rows * cols
    assert encoded.visual_tokens == tokens
    assert encoded.vit_passes == item.pixel_values.shape[0] == 5 + rows * cols
    assert encoded.embeds[0].shape == (tokens + 1, tiny_model.config.llm_hidden_size)


def test_batched_frame_encoding_matches_per_item_encoding(tiny_model):
    config = tiny_model.config
    media = [frame_item(config, 1), frame_item(config, 2, frames=4, kind="video")]
    encoded = tiny_model.encode_media_items(media)
    assert encoded.vit_passes == 5
    assert encoded.visual_tokens == 5 * config.tokens_per_tile
    with torch.no_grad():
        for item, embeds in zip(media, encoded.embeds, strict=True):
            torch.testing.assert_close(embeds, tiny_model.encode_media(item), rtol=0, atol=1e-6)


def test_deduplicated_frames_give_the_same_embeddings_and_gradients(tiny_model):
    config = tiny_model.config
    black = torch.zeros(1, 3, config.tile_size, config.tile_size)
    video = frame_item(config, 3, frames=3, kind="video")
    video = MediaItem("video", torch.cat([black, black, video.pixel_values]))
    media = [MediaItem("frame", black.clone()), video]

    def run(dedupe: bool):
        tiny_model.zero_grad()
        encoded = tiny_model.encode_media_items(media, dedupe_frames=dedupe)
        torch.cat(encoded.embeds).square().sum().backward()
        grads = [p.grad.clone() for p in tiny_model.vision_tower.parameters() if p.grad is not None]
        return encoded, grads

    plain, plain_grads = run(False)
    assert plain_grads
    deduped, deduped_grads = run(True)
    tiny_model.zero_grad()
    assert plain.vit_passes == 6 and deduped.vit_passes == 4  # three black frames -> one pass
    for a, b in zip(plain.embeds, deduped.embeds, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for a, b in zip(plain_grads, deduped_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_temporal_pooling_halves_the_video_blocks(tiny_config, tiny_tokenizer):
    config = dataclasses.replace(tiny_config, video_pool_sizes=[[2, 1, 1]])
    model = NVILAModel.from_config(config, seed=0, tokenizer=tiny_tokenizer)
    video = frame_item(config, 5, frames=4, kind="video")
    with torch.no_grad():
        frames = model.frame_features(video.pixel_values)
        blocks = model.media_blocks(video)
        assert len(blocks) == 2
        torch.testing.assert_close(blocks[0], frames[0:2].mean(dim=0))
        torch.testing.assert_close(blocks[1], frames[2:4].mean(dim=0))
        video_id = media_token_ids(tiny_tokenizer)[VIDEO_TOKEN]
        embeds = model.embed_inputs([1, video_id, 2], [video])
    assert embeds.shape[1] == 2 + 2 * (config.tokens_per_tile + 1)


def test_splice_errors_are_clear(tiny_model, tiny_tokenizer):
    config = tiny_model.config
    ids = media_token_ids(tiny_tokenizer)
    with pytest.raises(ValueError, match="2 media tokens but 1 media items"):
        tiny_model.embed_inputs([ids[IMAGE_TOKEN], 3, ids[IMAGE_TOKEN]], [frame_item(config, 1)])
    with pytest.raises(ValueError, match="expects video, but media item 0 is a 'frame'"):
        tiny_model.embed_inputs([ids[VIDEO_TOKEN]], [frame_item(config, 1)])
    sentinel = ids["<vila/sentinel>"]
    with pytest.raises(ValueError, match=f"token id {sentinel} at position 1 is outside"):
        tiny_model.embed_inputs([3, sentinel], [])
    with pytest.raises(ValueError, match="unknown media kind 'audio'"):
        tiny_model.encode_media(MediaItem("audio", torch.zeros(1, 3, 56, 56)))


def test_nvila_model_without_tokenizer_asks_for_one(tiny_config):
    model = NVILAModel.from_config(tiny_config, seed=0)
    with pytest.raises(ValueError, match="bind_tokenizer"):
        model.encode_media(frame_item(tiny_config, 1))


def test_forward_matches_the_llm_on_the_same_embeddings(tiny_model):
    embeds = torch.randn(
        1, 6, tiny_model.config.llm_hidden_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ours = tiny_model(embeds).logits
        direct = tiny_model.llm(inputs_embeds=embeds).logits
    torch.testing.assert_close(ours, direct, rtol=0, atol=0)
