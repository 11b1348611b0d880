"""The KV cache reaches the language model under the argument name the installed transformers
declares (`cache`, or `past_key_values` in the releases for Python 3.10), so it is filled."""

import inspect

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM, Qwen2ForCausalLM

from nvila_core.transformers_compat import cache_argument, cache_argument_name


@pytest.mark.parametrize("model_class", [Qwen2ForCausalLM, LlamaForCausalLM])
def test_the_cache_argument_is_a_declared_parameter_not_swallowed_by_kwargs(model_class):
    assert cache_argument_name() in inspect.signature(model_class.forward).parameters


def test_a_cache_passed_by_name_is_filled_and_used(tiny_model):
    embeds = torch.randn(1, 7, tiny_model.llm.config.hidden_size)
    cache = DynamicCache(config=tiny_model.llm.config)
    with torch.inference_mode():
        prefix = tiny_model.llm(
            inputs_embeds=embeds[:, :6], **cache_argument(cache), use_cache=True
        )
        assert cache.get_seq_length() == 6
        step = tiny_model.llm(inputs_embeds=embeds[:, 6:], **cache_argument(cache), use_cache=True)
        full = tiny_model.llm(inputs_embeds=embeds, use_cache=False)
    assert cache.get_seq_length() == 7
    torch.testing.assert_close(prefix.logits[0, -1], full.logits[0, 5], rtol=0, atol=1e-5)
    torch.testing.assert_close(step.logits[0, -1], full.logits[0, 6], rtol=0, atol=1e-5)
