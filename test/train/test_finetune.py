"""Fine-tuning modes on the tiny NVILA model: trainable sets, LR groups, LoRA merge and save."""

import argparse

import pytest
import torch
from torch import nn

from nvila_core.model.checkpoint import load_checkpoint, save_checkpoint
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import NVILAProcessor
from nvila_core.train.finetune import (
    FinetuneConfig,
    add_finetune_cli,
    apply_finetune,
    finetune_param_groups,
    lora_target_names,
    merge_lora,
    trainable_parameter_names,
)

PROJECTOR = {f"mm_projector.layers.{i}.{p}" for i in (1, 2, 4) for p in ("weight", "bias")}
VIT_NORMS = {
    f"vision_tower.vision_model.encoder.layers.{i}.layer_norm{n}.{p}"
    for i in range(3)
    for n in (1, 2)
    for p in ("weight", "bias")
} | {
    "vision_tower.vision_model.post_layernorm.weight",
    "vision_tower.vision_model.post_layernorm.bias",
}
LLM_NORMS = {
    f"llm.model.layers.{i}.{n}.weight"
    for i in range(2)
    for n in ("input_layernorm", "post_attention_layernorm")
} | {"llm.model.norm.weight"}
LLM_LINEARS = [
    f"llm.model.layers.{i}.{m}"
    for i in range(2)
    for m in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]
VIT_LINEARS = [
    f"vision_tower.vision_model.encoder.layers.{i}.{m}"
    for i in range(3)
    for m in (
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.q_proj",
        "self_attn.out_proj",
        "mlp.fc1",
        "mlp.fc2",
    )
]


def lora_params(linears):
    return {f"{name}.lora_{ab}.default.weight" for name in linears for ab in ("A", "B")}


@pytest.fixture
def fresh_model(tiny_config, tiny_tokenizer):
    """A tiny model of its own (apply_finetune mutates it)."""
    return NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer).eval()


@pytest.fixture
def image_inputs(tiny_config, tiny_tokenizer, make_frames):
    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    return processor("Describe the scene.", images=make_frames(1))


def logits_of(model, inputs):
    with torch.no_grad():
        embeds = model.embed_inputs(inputs.input_ids, inputs.media)
        return model(inputs_embeds=embeds).logits


def randomize_lora_b(model, seed=1):
    """LoRA B starts at zero (adapter = identity); give it values so merging matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def all_names(model, prefix):
    return {name for name, _ in model.named_parameters() if name.startswith(prefix)}


@pytest.mark.parametrize(
    ("llm", "vision", "expected"),
    [
        ("frozen", "frozen", lambda m: set()),
        ("frozen", "layernorm", lambda m: VIT_NORMS),
        ("layernorm", "frozen", lambda m: LLM_NORMS),
        ("lora", "frozen", lambda m: lora_params(LLM_LINEARS)),
        ("frozen", "lora", lambda m: lora_params(VIT_LINEARS)),
        ("lora", "layernorm", lambda m: lora_params(LLM_LINEARS) | VIT_NORMS),
        ("full", "lora", lambda m: all_names(m, "llm.") | lora_params(VIT_LINEARS)),
        ("frozen", "full", lambda m: all_names(m, "vision_tower.")),
    ],
)
def test_trainable_parameters_per_mode(fresh_model, llm, vision, expected):
    model = apply_finetune(fresh_model, FinetuneConfig(llm=llm, vision_tower=vision, lora_r=4))
    assert set(trainable_parameter_names(model)) == expected(model) | PROJECTOR


def test_lora_targets_skip_lm_head_and_projector(fresh_model):
    assert "lm_head" not in lora_target_names(fresh_model.llm)
    assert [f"llm.{n}" for n in lora_target_names(fresh_model.llm)] == LLM_LINEARS
    assert [f"vision_tower.{n}" for n in lora_target_names(fresh_model.vision_tower)] == VIT_LINEARS


def test_lora_keeps_model_structure(fresh_model, image_inputs):
    before = logits_of(fresh_model, image_inputs)
    model = apply_finetune(fresh_model, FinetuneConfig(llm="lora", vision_tower="lora", lora_r=4))
    assert type(model.llm).__name__ == "Qwen2ForCausalLM"
    assert not any(m.training for m in model.modules())  # new LoRA dropouts follow eval mode
    # LoRA B starts at zero: the adapted model computes exactly what the base model did
    torch.testing.assert_close(logits_of(model, image_inputs), before, rtol=0, atol=1e-6)


def test_param_groups_apply_the_vision_lr_ratio(fresh_model):
    cfg = FinetuneConfig(llm="lora", vision_tower="layernorm", lora_r=4, vision_lr_ratio=20)
    model = apply_finetune(fresh_model, cfg)
    groups = finetune_param_groups(model, cfg, lr=2e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("llm", 2e-4),
        ("vision_tower", 1e-5),
        ("mm_projector", 2e-4),
    ]
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    assert len(groups[1]["params"]) == len(VIT_NORMS)


def test_param_groups_projector_lr_and_empty_groups(fresh_model):
    cfg = FinetuneConfig(llm="full", vision_tower="frozen", projector_lr=1e-3)
    groups = finetune_param_groups(apply_finetune(fresh_model, cfg), cfg, lr=1e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("llm", 1e-5), ("mm_projector", 1e-3)]


def test_training_steps_update_only_trainable_parameters(fresh_model, image_inputs):
    cfg = FinetuneConfig(llm="lora", vision_tower="layernorm", lora_r=4)
    model = apply_finetune(fresh_model, cfg)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    norm = model.vision_tower.vision_model.encoder.layers[0].layer_norm1.weight
    norm_before = norm.detach().clone()
    optimizer = torch.optim.SGD(finetune_param_groups(model, cfg, lr=0.1))
    for _ in range(2):
        embeds = model.embed_inputs(image_inputs.input_ids, image_inputs.media)
        loss = model(inputs_embeds=embeds).logits.logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(norm, norm_before)  # gradients reach the ViT's layer norms
    lora_b = model.llm.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.abs().sum() > 0
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


def test_merged_lora_matches_adapters_and_round_trips(
    fresh_model, tiny_config, tiny_tokenizer, image_inputs, tmp_path
):
    base_keys = set(fresh_model.state_dict())
    base_logits = logits_of(fresh_model, image_inputs)
    model = apply_finetune(fresh_model, FinetuneConfig(llm="lora", vision_tower="lora", lora_r=4))
    randomize_lora_b(model)
    adapted = logits_of(model, image_inputs)
    assert not torch.allclose(adapted, base_logits, atol=1e-3)

    merged = merge_lora(model)
    assert not any("peft" in type(m).__module__ for m in merged.modules())
    assert "peft_config" not in vars(merged.llm)
    assert set(merged.state_dict()) == base_keys
    merged_logits = logits_of(merged, image_inputs)
    torch.testing.assert_close(merged_logits, adapted, rtol=0, atol=1e-5)

    save_checkpoint(merged, tiny_tokenizer, tmp_path / "merged")
    reloaded, _ = load_checkpoint(tmp_path / "merged")
    torch.testing.assert_close(logits_of(reloaded, image_inputs), merged_logits, rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
@pytest.mark.parametrize("side", ["llm", "vision_tower"])
def test_qlora_on_cpu_refuses_clearly(fresh_model, side):
    before = {n: p.requires_grad for n, p in fresh_model.named_parameters()}
    cfg = FinetuneConfig(**{side: "qlora"})
    with pytest.raises(RuntimeError, match=r"QLoRA .*needs bitsandbytes on a CUDA GPU.*cpu"):
        apply_finetune(fresh_model, cfg)
    # refused before touching the model
    assert type(fresh_model.llm.model.layers[0].mlp.up_proj) is nn.Linear
    assert {n: p.requires_grad for n, p in fresh_model.named_parameters()} == before


def test_config_rejects_unknown_modes_and_ratios():
    with pytest.raises(ValueError, match="unknown llm fine-tuning mode 'adapter'"):
        FinetuneConfig(llm="adapter")
    with pytest.raises(ValueError, match="vision_lr_ratio"):
        FinetuneConfig(vision_lr_ratio=0)


def test_finetune_cli_builds_the_config():
    parser = argparse.ArgumentParser()
    seen = []
    add_finetune_cli(parser.add_subparsers(), run=lambda args, cfg: seen.append(cfg) or 0)
    args = parser.parse_args(
        ["finetune", "--llm-mode", "qlora", "--vision-mode", "frozen", "--vision-lr-ratio", "50"]
    )
    assert args.handler(args) == 0
    assert seen == [FinetuneConfig(llm="qlora", vision_tower="frozen", vision_lr_ratio=50.0)]
