"""FP8 gating and layer selection (CPU: refusal, pure selection logic, optional emulation)."""

import dataclasses
import importlib.util

import pytest
import torch

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.modeling import NVILAModel
from nvila_core.train.finetune import FinetuneConfig, apply_finetune
from nvila_core.train.fp8 import enable_fp8, fp8_linear_names, fp8_supported

TINY_DECODER = [
    "self_attn.q_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")


@pytest.fixture
def fresh_model(tiny_config, tiny_tokenizer):
    return NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer).eval()


@no_cuda
def test_fp8_is_unsupported_without_cuda():
    assert fp8_supported() == (False, "no CUDA device is available")


@no_cuda
def test_enable_fp8_refuses_on_cpu_naming_the_requirement(fresh_model):
    with pytest.raises(RuntimeError) as err:
        enable_fp8(fresh_model, min_features=64)
    message = str(err.value)
    assert "compute capability >= 8.9" in message
    assert "pip install torchao==" in message
    assert "no CUDA device is available" in message
    assert all(type(m).__name__ != "Float8Linear" for m in fresh_model.modules())


def test_selection_on_nvila_8b_matches_coat_threshold():
    """Qwen2.5-7B: q/o (3584x3584) and the MLP qualify; GQA k/v (3584->512) do not."""
    model = NVILAModel.from_config(NVILAConfig.preset("nvila-8b"), device="meta")
    names = fp8_linear_names(model)
    per_layer = [
        "self_attn.q_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    assert names == [f"llm.model.layers.{i}.{m}" for i in range(28) for m in per_layer]


def test_selection_on_tiny_model_honours_min_features_and_alignment(tiny_config, tiny_tokenizer):
    model = NVILAModel.from_config(tiny_config, device="meta")
    # hidden 64, MLP 128, k/v 32: lm_head (64 -> 512), vision and projector are never picked
    expected = [f"llm.model.layers.{i}.{m}" for i in range(2) for m in TINY_DECODER]
    assert fp8_linear_names(model, min_features=64) == expected
    assert fp8_linear_names(model, min_features=65) == []
    assert len(fp8_linear_names(model, min_features=1)) == 14  # k/v too, still no lm_head
    # an MLP width that is not a multiple of 16 cannot use FP8 matmuls
    odd = dataclasses.replace(
        tiny_config, llm_config={**tiny_config.llm_config, "intermediate_size": 120}
    )
    odd_model = NVILAModel.from_config(odd, device="meta")
    assert fp8_linear_names(odd_model, min_features=64) == [
        f"llm.model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "o_proj")
    ]


def test_selection_takes_lora_base_layers_not_adapters(fresh_model):
    model = apply_finetune(fresh_model, FinetuneConfig(llm="lora", vision_tower="frozen", lora_r=4))
    expected = [f"llm.model.layers.{i}.{m}.base_layer" for i in range(2) for m in TINY_DECODER]
    assert fp8_linear_names(model, min_features=64) == expected


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed")
def test_emulated_fp8_converts_exactly_the_selection(fresh_model, tiny_config, tiny_tokenizer):
    from torchao.float8.float8_linear import Float8Linear

    selected = fp8_linear_names(fresh_model, min_features=64)
    model = enable_fp8(fresh_model, min_features=64, emulate=True)
    converted = [n for n, m in model.named_modules() if isinstance(m, Float8Linear)]
    assert converted == selected
    config = model.get_submodule(selected[0]).config
    assert config.cast_config_input.target_dtype == torch.float8_e4m3fn
    assert config.cast_config_weight.target_dtype == torch.float8_e4m3fn
    assert config.cast_config_grad_output.target_dtype == torch.float8_e5m2
    embeds = torch.randn(1, 12, tiny_config.llm_config["hidden_size"], requires_grad=True)
    model(inputs_embeds=embeds).logits.float().logsumexp(-1).mean().backward()
    grad = model.get_submodule(selected[0]).weight.grad
    assert grad is not None and torch.isfinite(grad).all()


@no_cuda
def test_fp8_bench_refuses_on_cpu(tmp_path):
    from nvila_core.train import fp8_bench

    with pytest.raises(SystemExit, match="no CUDA device is available"):
        fp8_bench.main(["--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not fp8_supported()[0], reason="needs an FP8-capable GPU and torchao")
def test_a_training_stage_runs_in_fp8_on_the_gpu(tmp_path, tiny_config, tiny_tokenizer):
    """`fp8: true` end to end on CUDA: converted layers train, and the checkpoint loads back as
    a plain model (FP8 is a cast around each matmul, not a weight format)."""
    from episode_folders import write_episode_dataset
    from torchao.float8.float8_linear import Float8Linear

    from nvila_core.model.checkpoint import load_checkpoint
    from nvila_core.model.processing import NVILAProcessor
    from nvila_core.train.data import NavDataset, make_loader, read_episode_dataset
    from nvila_core.train.trainer import TrainConfig, Trainer

    samples = read_episode_dataset(write_episode_dataset(tmp_path / "data", 2, 4, 0), "sim")
    config = TrainConfig(
        batch_size=4, max_steps=4, lr=1e-3, dtype="bfloat16", fp8=True, fp8_min_features=64,
        device="cuda", log_every=1, save_every=0, eval_generate_samples=0,
    )  # fmt: skip
    processor = NVILAProcessor(tiny_config, tiny_tokenizer)
    loader = make_loader(NavDataset(samples, processor), config.batch_size, seed=0, num_workers=0)
    model = NVILAModel.from_config(tiny_config, seed=0, tokenizer=tiny_tokenizer)
    before = model.llm.model.layers[0].mlp.up_proj.weight.detach().clone()
    trainer = Trainer(model, tiny_tokenizer, config, loader, out_dir=tmp_path / "run")
    converted = [n for n, m in trainer.model.named_modules() if isinstance(m, Float8Linear)]
    assert len(converted) == 10  # the tiny model's 2 decoder layers x 5 linears
    result = trainer.train()
    losses = [row["loss"] for row in trainer.history]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    reloaded, _ = load_checkpoint(result["final"])
    after = reloaded.llm.model.layers[0].mlp.up_proj.weight
    assert type(reloaded.llm.model.layers[0].mlp.up_proj) is torch.nn.Linear
    assert not torch.equal(before, after.cpu())
