"""Checkpoint IO: both layouts round-trip bit-exactly, real-checkpoint shapes load, bad input is named."""

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nvila_core.model.checkpoint import (
    CheckpointError,
    detect_layout,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.model.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def probe_inputs(tiny_model, tiny_tokenizer):
    """A prompt with a dynamic-S2 image, so every weight of the model affects the logits."""
    processor = NVILAProcessor(tiny_model.config, tiny_tokenizer)
    pixels = (torch.rand(40, 72, 3, generator=torch.Generator().manual_seed(1)) * 255).to(
        torch.uint8
    )
    return processor("What is in front of the robot?", images=[pixels.numpy()])


def logits(model: NVILAModel, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(model.embed_inputs(inputs.input_ids, inputs.media)).logits


def safetensors_keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as reader:
        return set(reader.keys())


def copy_checkpoint(source, tmp_path):
    return shutil.copytree(source, tmp_path / "checkpoint")


def test_vila_layout_files_follow_the_released_checkpoints(tiny_checkpoint):
    root = tiny_checkpoint
    top = json.loads((root / "config.json").read_text())
    assert top["model_type"] == "llava_llama"
    llm = json.loads((root / "llm" / "config.json").read_text())
    assert llm["architectures"] == ["Qwen2ForCausalLM"] and llm["vocab_size"] == 512
    assert (root / "llm" / "tokenizer.json").is_file()
    vision = json.loads((root / "vision_tower" / "config.json").read_text())
    assert vision["architectures"] == ["SiglipVisionModel"]
    processor = json.loads((root / "vision_tower" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == processor["image_std"] == [0.5, 0.5, 0.5]
    assert processor["resample"] == 3
    projector = json.loads((root / "mm_projector" / "config.json").read_text())
    assert projector == {"model_type": "v2l_projector", "mm_projector_type": "mlp_downsample"}
    vision_keys = safetensors_keys(root / "vision_tower" / "model.safetensors")
    assert all(k.startswith("vision_model.") for k in vision_keys)
    assert "vision_model.post_layernorm.weight" in vision_keys
    projector_keys = safetensors_keys(root / "mm_projector" / "model.safetensors")
    assert all(k.startswith("layers.") for k in projector_keys)
    assert "model.embed_tokens.weight" in safetensors_keys(root / "llm" / "model.safetensors")
    assert detect_layout(root) == "vila"


def test_vila_layout_round_trip_is_bit_exact(tiny_checkpoint, tiny_model, probe_inputs):
    model, tokenizer = load_checkpoint(tiny_checkpoint)
    assert model.config.architecture == tiny_model.config.architecture
    assert model.config.s2_scales == tiny_model.config.s2_scales
    assert model.config.name == tiny_model.config.name
    assert tokenizer.get_vocab() == model_tokenizer_vocab(tiny_checkpoint)
    assert torch.equal(logits(model, probe_inputs), logits(tiny_model, probe_inputs))


def model_tokenizer_vocab(root) -> dict[str, int]:
    data = json.loads((root / "llm" / "tokenizer.json").read_text())
    vocab = dict(data["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in data["added_tokens"]})
    return vocab


def test_hf_layout_round_trip_is_bit_exact(tmp_path, tiny_model, tiny_tokenizer, probe_inputs):
    root = save_checkpoint(tiny_model, tiny_tokenizer, tmp_path / "hf", layout="hf")
    config = json.loads((root / "config.json").read_text())
    assert config["model_type"] == "nvila"
    assert config["text_config"]["model_type"] == "qwen2"
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    assert config["image_token_id"] == 513 and config["video_token_id"] == 514
    prefixes = {k.split(".")[0] for k in safetensors_keys(root / "model.safetensors")}
    assert prefixes == {"llm", "vision_tower", "mm_projector"}
    assert detect_layout(root) == "hf"
    model, _ = load_checkpoint(root)
    assert torch.equal(logits(model, probe_inputs), logits(tiny_model, probe_inputs))


def test_sharded_llm_with_an_index_loads(tmp_path, tiny_checkpoint, tiny_model, probe_inputs):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    llm_dir = root / "llm"
    tensors = load_file(str(llm_dir / "model.safetensors"))
    (llm_dir / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for n, half in enumerate(halves, start=1):
        shard = f"model-0000{n}-of-00002.safetensors"
        save_file({k: tensors[k] for k in half}, str(llm_dir / shard))
        weight_map.update(dict.fromkeys(half, shard))
    (llm_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    model, _ = load_checkpoint(root)
    assert torch.equal(logits(model, probe_inputs), logits(tiny_model, probe_inputs))


def test_save_shards_large_parts(tmp_path, tiny_model, tiny_tokenizer, probe_inputs):
    root = save_checkpoint(tiny_model, tiny_tokenizer, tmp_path / "sharded", max_shard_bytes=50_000)
    index = json.loads((root / "llm" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    model, _ = load_checkpoint(root)
    assert torch.equal(logits(model, probe_inputs), logits(tiny_model, probe_inputs))


def test_bf16_weights_are_cast_to_the_requested_dtype(tmp_path, tiny_model, tiny_tokenizer):
    root = save_checkpoint(tiny_model, tiny_tokenizer, tmp_path / "bf16", dtype=torch.bfloat16)
    assert read_config(root).torch_dtype == "bfloat16"
    stored = load_file(str(root / "mm_projector" / "model.safetensors"))
    assert stored["layers.2.weight"].dtype == torch.bfloat16
    model, _ = load_checkpoint(root, dtype=torch.float32)
    weight = model.mm_projector.layers[2].weight
    assert weight.dtype == torch.float32
    expected = tiny_model.mm_projector.layers[2].weight.detach().to(torch.bfloat16).float()
    assert torch.equal(weight.detach(), expected)
    assert load_checkpoint(root)[0].dtype == torch.bfloat16  # default: the checkpoint's dtype


def test_tied_lm_head_is_absent_from_the_files_and_loads_tied(
    tmp_path, tiny_config, tiny_tokenizer
):
    tied = dataclasses.replace(
        tiny_config, llm_config={**tiny_config.llm_config, "tie_word_embeddings": True}
    )
    model = NVILAModel.from_config(tied, seed=1, tokenizer=tiny_tokenizer)
    root = save_checkpoint(model, tiny_tokenizer, tmp_path / "tied")
    assert "lm_head.weight" not in safetensors_keys(root / "llm" / "model.safetensors")
    loaded, _ = load_checkpoint(root)
    assert loaded.llm.lm_head.weight is loaded.llm.get_input_embeddings().weight
    assert torch.equal(loaded.llm.lm_head.weight, model.llm.lm_head.weight)


def test_vila15_model_round_trips_its_architecture(tmp_path, tiny_vila15_config):
    tokenizer = build_tokenizer(512, "llama_3")
    model = NVILAModel.from_config(tiny_vila15_config, seed=2, tokenizer=tokenizer)
    root = save_checkpoint(model, tokenizer, tmp_path / "navila")
    llm = json.loads((root / "llm" / "config.json").read_text())
    assert llm["architectures"] == ["LlamaForCausalLM"] and llm["rope_theta"] == 500000.0
    config = read_config(root)
    assert (config.architecture, config.chat_template, config.llm_type) == (
        "vila1.5",
        "llama_3",
        "llama",
    )
    loaded, _ = load_checkpoint(root)
    embeds = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(embeds).logits, model(embeds).logits)


def test_a_checkpoint_shaped_like_the_released_ones_loads(
    tmp_path, tiny_model, tiny_tokenizer, probe_inputs
):
    """Configs as transformers 4.46 / VILA wrote them, bf16 shards, a SigLIP head never used."""
    root = save_checkpoint(
        tiny_model, tiny_tokenizer, tmp_path / "NVILA-tiny", dtype=torch.bfloat16
    )
    top = json.loads((root / "config.json").read_text())
    del top["nvila_core"]
    top.update(
        video_encoder='{"_target_": "llava.model.encoders.BasicVideoEncoder"}',
        mm_use_im_start_end=False,
        resume_path="runs/train/stage3/model",
    )
    (root / "config.json").write_text(json.dumps(top))
    llm_file = root / "llm" / "config.json"
    llm = json.loads(llm_file.read_text())
    for key in ("rope_parameters", "dtype", "layer_types"):
        llm.pop(key)
    llm.update(torch_dtype="bfloat16", transformers_version="4.46.0", use_sliding_window=False)
    llm_file.write_text(json.dumps(llm))
    vision_file = root / "vision_tower" / "model.safetensors"
    vision = load_file(str(vision_file))
    vision["vision_model.head.probe"] = torch.zeros(1, 1, 32, dtype=torch.bfloat16)
    vision["vision_model.head.layernorm.weight"] = torch.zeros(32, dtype=torch.bfloat16)
    save_file(vision, str(vision_file))

    model, _ = load_checkpoint(root, dtype=torch.float32)
    assert model.config.name == "NVILA-tiny"
    assert (model.config.architecture, model.config.chat_template) == ("nvila", "qwen2")
    assert model.config.s2_scales == tiny_model.config.s2_scales
    reference = NVILAModel.from_config(tiny_model.config, tokenizer=tiny_tokenizer)
    with torch.no_grad():
        for name, tensor in reference.state_dict().items():
            tensor.copy_(tiny_model.state_dict()[name].to(torch.bfloat16))
    assert torch.equal(logits(model, probe_inputs), logits(reference, probe_inputs))


def test_rope_theta_is_read_from_transformers_5_rope_parameters(tmp_path, tiny_vila15_config):
    model = NVILAModel.from_config(tiny_vila15_config, seed=0)
    root = save_checkpoint(model, build_tokenizer(512, "llama_3"), tmp_path / "navila")
    llm_file = root / "llm" / "config.json"
    llm = json.loads(llm_file.read_text())
    del llm["rope_theta"]  # transformers 5 keeps it under rope_parameters only
    llm_file.write_text(json.dumps(llm))
    assert read_config(root).llm_config["rope_theta"] == 500000.0


# ---------------------------------------------------------------- broken checkpoints
def test_missing_vision_tower_folder(tmp_path, tiny_checkpoint):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    shutil.rmtree(root / "vision_tower")
    with pytest.raises(CheckpointError, match="missing folder vision_tower/"):
        load_checkpoint(root)


def test_tensor_with_the_wrong_shape_names_file_key_and_shapes(tmp_path, tiny_checkpoint):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    file = root / "mm_projector" / "model.safetensors"
    tensors = load_file(str(file))
    tensors["layers.4.weight"] = torch.zeros(64, 32)
    save_file(tensors, str(file))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(root)
    message = str(error.value)
    assert str(file) in message and "'layers.4.weight'" in message
    assert "[64, 32]" in message and "[64, 64]" in message


def test_unknown_projector_type(tmp_path, tiny_checkpoint):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    file = root / "mm_projector" / "config.json"
    file.write_text(json.dumps({"model_type": "v2l_projector", "mm_projector_type": "qformer"}))
    with pytest.raises(
        CheckpointError, match=r"mm_projector/config.json: unknown projector type 'qformer'"
    ):
        load_checkpoint(root)


def test_no_safetensors_and_pickles_are_never_read(tmp_path, tiny_checkpoint):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    (root / "vision_tower" / "model.safetensors").unlink()
    (root / "vision_tower" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="vision_tower: no safetensors weights"):
        load_checkpoint(root)


def test_missing_and_unexpected_tensors(tmp_path, tiny_checkpoint, tiny_config):
    root = copy_checkpoint(tiny_checkpoint, tmp_path)
    file = root / "mm_projector" / "model.safetensors"
    tensors = load_file(str(file))
    removed = tensors.pop("layers.1.bias")
    save_file(tensors, str(file))
    norm_width = 4 * tiny_config.mm_hidden_size  # LayerNorm over the 2x2-merged channels
    with pytest.raises(
        CheckpointError, match=rf"missing tensor 'layers\.1\.bias' of shape \[{norm_width}\]"
    ):
        load_checkpoint(root)
    tensors["layers.1.bias"] = removed
    tensors["layers.9.weight"] = torch.zeros(2)
    save_file(tensors, str(file))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'layers\.9\.weight'"):
        load_checkpoint(root)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="unknown model_type 'bert'"):
        load_checkpoint(tmp_path)


def test_checkpoint_tokenizer_tokenizes_exactly_like_the_built_one(tiny_checkpoint, tiny_tokenizer):
    """config.json beside the tokenizer must not make AutoTokenizer rebuild a Qwen2 pre-tokenizer
    (which would split "45" into "4", "5" and change every action answer)."""
    _, loaded = load_checkpoint(tiny_checkpoint)
    text = "The next action is turn left 45 degrees. Move forward 75 cm.<image>\n"
    assert loaded(text).input_ids == tiny_tokenizer(text).input_ids
