"""AWQ / SmoothQuant math on small tensors, and the calibrated pipeline on the tiny model."""

import torch
from torch import nn

from nvila_core.quant.awq import (
    candidate_scales,
    compress_rows,
    quantization_loss,
    search_scale,
)
from nvila_core.quant.calibration import record_inputs, run_vision
from nvila_core.quant.folding import fold_into_norm, fold_into_rows, scale_inputs
from nvila_core.quant.formats import (
    QuantState,
    activation_scale,
    dequantize_int4_blocks,
    quantize_int4_blocks,
    quantize_int8_channels,
)
from nvila_core.quant.smoothquant import smoothing_scales


def _outlier_inputs(rows=256, channels=64, seed=0):
    """Activations with a few channels 30x larger than the rest (the case AWQ targets)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, channels, generator=generator)
    x[:, :3] *= 30
    w = torch.randn(48, channels, generator=generator)
    return x, w


def test_awq_search_picks_the_loss_minimising_scale():
    x, w = _outlier_inputs()
    search = search_scale(x, [w], block_size=64, grid=20)
    absmean = x.abs().mean(dim=0)
    brute = [quantization_loss(x, [w], candidate_scales(absmean, i / 20), 64) for i in range(20)]
    best = min(range(20), key=brute.__getitem__)
    assert search.alpha == best / 20
    torch.testing.assert_close(search.losses, brute, rtol=1e-5, atol=0)
    assert search.alpha > 0  # outlier channels make plain rounding (alpha 0) worse
    assert brute[best] < 0.9 * brute[0]
    torch.testing.assert_close(search.scales, candidate_scales(absmean, search.alpha))


def test_compressed_rows_give_the_same_losses():
    """The search runs on min(rows, in) rows whose Gram matrix is that of all calibration rows."""
    x, w = _outlier_inputs(rows=1024, channels=128)
    rows = compress_rows(x)
    assert rows.shape == (128, 128)
    torch.testing.assert_close(rows.T @ rows, x.T @ x, rtol=1e-5, atol=1e-2)
    scales = candidate_scales(x.abs().mean(dim=0), 0.5)
    full = quantization_loss(x, [w], scales, 128)
    assert abs(quantization_loss(rows, [w], scales, 128) * 128 / 1024 - full) <= 1e-5 * full
    assert torch.equal(compress_rows(x[:64]), x[:64])  # fewer rows than inputs: kept as they are


def test_folding_keeps_the_float_output():
    torch.manual_seed(0)
    norm, q, k = nn.LayerNorm(16), nn.Linear(16, 8), nn.Linear(16, 4)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    gate, up, down = nn.Linear(16, 32), nn.Linear(16, 32), nn.Linear(32, 16)
    x = torch.randn(5, 16)

    def mlp(x):
        return down(torch.nn.functional.silu(gate(x)) * up(x))

    with torch.no_grad():
        before = [q(norm(x)), k(norm(x)), mlp(x)]
    s_in, s_mid = torch.rand(16) + 0.5, torch.rand(32) + 0.5
    fold_into_norm(norm, s_in)
    scale_inputs(q, s_in)
    scale_inputs(k, s_in)
    fold_into_rows(up, s_mid)
    scale_inputs(down, s_mid)
    with torch.no_grad():
        after = [q(norm(x)), k(norm(x)), mlp(x)]
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_quantized_model_keeps_float_outputs_before_quantization(
    tiny_model, quantized, calib_samples
):
    model, _ = quantized  # folded in place by AWQ and SmoothQuant, weights still float
    sample = calib_samples[0]
    with torch.no_grad():
        ref = tiny_model(tiny_model.embed_inputs(sample.input_ids, sample.media)).logits
        got = model(model.embed_inputs(sample.input_ids, sample.media)).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)


def test_int4_block_round_trip_error_is_bounded():
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(0))
    codes, scales = quantize_int4_blocks(w, 128)
    assert codes.dtype == torch.int8 and int(codes.min()) >= -8 and int(codes.max()) <= 7
    assert scales.dtype == torch.float16 and scales.shape == (16, 2)
    error = (dequantize_int4_blocks(codes, scales) - w).abs().reshape(16, 2, 128)
    half_step = scales.float()[..., None] / 2
    # only the rounding to the grid: code * FP16 scale is exact in float32
    assert bool((error <= half_step * (1 + 1e-6)).all())
    assert float(error.max()) > 0


def test_int8_channel_round_trip_error_is_bounded():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    codes, scales = quantize_int8_channels(w)
    assert int(codes.abs().max()) == 127  # the largest weight of each row maps to +-127
    error = (codes.float() * scales[:, None] - w).abs()
    assert bool((error <= scales[:, None] / 2 + 1e-7).all())


def test_smoothquant_migration_keeps_xw_and_flattens_activations():
    x, w = _outlier_inputs(rows=64, channels=32)
    absmax = x.abs().amax(dim=0)
    s = smoothing_scales(absmax, [w], alpha=0.3)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-3)
    smoothed = (x / s).abs().amax(dim=0)
    assert smoothed.max() / smoothed.min() < absmax.max() / absmax.min()
    expected = absmax.pow(0.3) / w.abs().amax(dim=0).pow(0.7)
    torch.testing.assert_close(s, expected)


def test_per_tensor_activation_scale_is_the_calibration_max(tiny_model, quantized, calib_samples):
    _, state = quantized
    name = "vision_tower.vision_model.encoder.layers.0.mlp.fc2"  # not smoothed: input unchanged
    stats = record_inputs(tiny_model, [name], run_vision(tiny_model, calib_samples))
    calibrated_max = float(stats[name].absmax.max())
    assert state.linears[name].act_scale == activation_scale(calibrated_max)
    assert activation_scale(calibrated_max) == calibrated_max / 127


def test_recipe_scope_and_state_round_trip(quantized, tmp_path):
    _, state = quantized
    int4 = state.select("llm.")
    int8 = {**state.select("vision_tower."), **state.select("mm_projector.")}
    assert {q.scheme for q in int4.values()} == {"int4_block"}
    assert {q.scheme for q in int8.values()} == {"int8_channel"}
    # 2 decoder layers x 7 linears; 2 ViT layers run x 6 linears + the projector's 2
    assert len(int4) == 2 * 7 and len(int8) == 2 * 6 + 2
    assert "llm.lm_head" not in state.linears
    # tiny dims are below 128: q/k/v/o/gate/up (in 64) use one block per row, down (in 128) 128
    assert state.linears["llm.model.layers.0.mlp.down_proj"].block_size == 128
    assert state.linears["llm.model.layers.0.self_attn.q_proj"].block_size == 64
    state.save(tmp_path)
    loaded = QuantState.load(tmp_path)
    assert loaded.recipe == state.recipe
    for name, q in state.linears.items():
        assert torch.equal(loaded.linears[name].qweight, q.qweight)
        assert torch.equal(loaded.linears[name].scales, q.scales)
        assert loaded.linears[name].act_scale == q.act_scale
