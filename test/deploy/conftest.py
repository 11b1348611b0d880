"""Deployment fixtures: calibration samples, a quantized copy of the tiny model, and exports.

Session-scoped and shared: tests must not modify them (the quantized model is a deep copy, so
the global `tiny_model` stays untouched).
"""

import copy

import numpy as np
import pytest

from nvila_core.export import export_model
from nvila_core.model.processing import NVILAProcessor
from nvila_core.quant import quantize_model
from nvila_core.quant.calibration import calibration_inputs


@pytest.fixture(scope="session")
def calib_images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(16)]


@pytest.fixture(scope="session")
def calib_samples(tiny_config, tiny_tokenizer, calib_images):
    return calibration_inputs(NVILAProcessor(tiny_config, tiny_tokenizer), calib_images)


@pytest.fixture(scope="session")
def quantized(tiny_model, calib_samples):
    """(scale-folded copy of the tiny model, its W4A16 + W8A8 QuantState)."""
    model = copy.deepcopy(tiny_model)
    return model, quantize_model(model, calib_samples, "both")


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory, tiny_model, tiny_tokenizer):
    out = tmp_path_factory.mktemp("export-fp32")
    export_model(tiny_model, tiny_tokenizer, out)
    return out


@pytest.fixture(scope="session")
def quant_export(tmp_path_factory, quantized, tiny_tokenizer):
    model, state = quantized
    out = tmp_path_factory.mktemp("export-w4a16-w8a8")
    export_model(model, tiny_tokenizer, out, state)
    return out
