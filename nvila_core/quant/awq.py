"""W4A16 AWQ for the LLM's decoder layers (nvila.md §6.1, trt.md §7.1).

Activation-aware weight quantization: input channels that carry large activations matter most,
so before rounding each group of linears sharing one input is re-parameterised with per-channel
scales s = mean|x|^alpha (normalised), alpha picked from a grid by the output error of the
quantized group on calibration inputs. The scales are folded into the op producing the input:

- input_layernorm      -> q_proj, k_proj, v_proj
- post_attention_layernorm -> gate_proj, up_proj
- up_proj (its rows)   -> down_proj   (exact: down(act(gate) * up))

o_proj is rounded without scales: its input comes from attention, whose v_proj rows could only
absorb scales without GQA (llm-awq skips it for GQA models too). Embeddings and lm_head stay in
float, as in llm-awq. Weights are INT4 symmetric (TensorRT rejects zero points) in blocks of 128
input channels with FP16 scales; a linear whose input dimension is below 128 (tiny test models
only) uses one block per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nvila_core.model.modeling import NVILAModel
from nvila_core.model.processing import ModelInputs
from nvila_core.progress import track
from nvila_core.quant.calibration import DEFAULT_MAX_ROWS, record_inputs, run_llm
from nvila_core.quant.folding import fold_into_norm, fold_into_rows, scale_inputs
from nvila_core.quant.formats import QuantizedLinear, dequantize_int4_blocks, quantize_int4_blocks

DEFAULT_BLOCK_SIZE = 128
DEFAULT_GRID = 20
DECODER_PREFIX = "llm.model.layers"


def block_size_for(in_features: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """`block_size`, or the whole row when a tiny model's input dimension is smaller."""
    if in_features < block_size:
        return in_features
    if in_features % block_size:
        raise ValueError(f"input dimension {in_features} is not a multiple of {block_size}")
    return block_size


def candidate_scales(x_absmean: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean|x|^alpha, normalised to a geometric mean of max and min of 1 (llm-awq's form)."""
    s = x_absmean.clamp_min(1e-4).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


def rounding_error(w: torch.Tensor, scales: torch.Tensor, block_size: int) -> torch.Tensor:
    """How INT4-rounding W diag(s) (inputs x / s) changes W as seen from the float inputs x."""
    return dequantize_int4_blocks(*quantize_int4_blocks(w * scales, block_size)) / scales - w


def quantization_loss(
    x: torch.Tensor, weights: Sequence[torch.Tensor], scales: torch.Tensor, block_size: int
) -> float:
    """Mean squared output error of the group when W diag(s) is INT4-rounded (inputs x / s)."""
    return sum(float((x @ rounding_error(w, scales, block_size).T).pow(2).mean()) for w in weights)


def compress_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows R with R^T R = x^T x, at most `in` of them: every squared output error |x e|^2 is
    |R e|^2, so the search multiplies min(rows, in) rows instead of all calibration rows."""
    if x.shape[0] <= x.shape[1]:
        return x
    return torch.linalg.qr(x, mode="r").R


@dataclass
class ScaleSearch:
    scales: torch.Tensor  # float32 [in]
    alpha: float
    losses: list[float]  # one per grid point; grid point i is alpha = i / len(losses)


def search_scale(
    x: torch.Tensor,
    weights: Sequence[torch.Tensor],
    block_size: int,
    grid: int = DEFAULT_GRID,
) -> ScaleSearch:
    """The loss-minimising alpha in {0, 1/grid, ..., (grid-1)/grid}; alpha 0 is plain rounding."""
    x = x.float()
    weights = [w.float() for w in weights]
    absmean = x.abs().mean(dim=0)
    rows = compress_rows(x)
    per_row = rows.shape[0] / x.shape[0]  # the loss is a mean over x's rows
    losses = [
        per_row * quantization_loss(rows, weights, candidate_scales(absmean, i / grid), block_size)
        for i in range(grid)
    ]
    best = min(range(grid), key=losses.__getitem__)
    return ScaleSearch(candidate_scales(absmean, best / grid), best / grid, losses)


def _groups(layer: str) -> list[tuple[str, list[str], bool]]:
    """(producer, consumers, producer is a linear) per scaled group of one decoder layer."""
    return [
        (f"{layer}.input_layernorm", [f"{layer}.self_attn.{p}_proj" for p in "qkv"], False),
        (
            f"{layer}.post_attention_layernorm",
            [f"{layer}.mlp.gate_proj", f"{layer}.mlp.up_proj"],
            False,
        ),
        (f"{layer}.mlp.up_proj", [f"{layer}.mlp.down_proj"], True),
    ]


def decoder_linears(layer: str) -> list[str]:
    """Every linear of one decoder layer, all of them quantized."""
    attn = [f"{layer}.self_attn.{p}_proj" for p in "qkvo"]
    return attn + [f"{layer}.mlp.{p}_proj" for p in ("gate", "up", "down")]


@torch.no_grad()
def awq_quantize_llm(
    model: NVILAModel,
    samples: Sequence[ModelInputs],
    block_size: int = DEFAULT_BLOCK_SIZE,
    grid: int = DEFAULT_GRID,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> tuple[dict[str, QuantizedLinear], dict[str, float]]:
    """Fold AWQ scales into `model` (in place) and INT4-quantize every decoder linear.

    Returns the quantized linears by module path and the alpha chosen per group.
    """
    num_layers = len(model.get_submodule(DECODER_PREFIX))
    layers = [f"{DECODER_PREFIX}.{i}" for i in range(num_layers)]
    groups = [group for layer in layers for group in _groups(layer)]
    rows_per_call = max(1, max_rows // max(1, len(samples)))
    stats = record_inputs(
        model, [consumers[0] for _, consumers, _ in groups], run_llm(model, samples), rows_per_call
    )
    alphas: dict[str, float] = {}
    search_desc = f"AWQ scale search ({num_layers} LLM layers)"
    for producer, consumers, producer_is_linear in track(groups, search_desc, "groups"):
        linears: list[nn.Linear] = [model.get_submodule(name) for name in consumers]
        block = block_size_for(linears[0].in_features, block_size)
        search = search_scale(
            stats[consumers[0]].samples(), [m.weight for m in linears], block, grid
        )
        source = model.get_submodule(producer)
        if producer_is_linear:
            fold_into_rows(source, search.scales)
        else:
            fold_into_norm(source, search.scales)
        for linear in linears:
            scale_inputs(linear, search.scales)
        alphas[producer] = search.alpha
    quantized = {}
    for layer in layers:
        for name in decoder_linears(layer):
            weight = model.get_submodule(name).weight
            block = block_size_for(weight.shape[1], block_size)
            codes, scales = quantize_int4_blocks(weight, block)
            quantized[name] = QuantizedLinear(name, "int4_block", codes, scales, block)
    return quantized, alphas
