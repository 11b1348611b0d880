"""Tiny random-weight models in the compact navigation format, and a backend that says a given
answer, for tests of what the engine and the policies do with a trained model's words."""

import dataclasses

from nvila_core.model.configuration import NVILAConfig
from nvila_core.model.generation import Decoded
from nvila_core.model.modeling import NVILAModel
from nvila_core.model.tokenizer import build_tokenizer
from nvila_core.runtime.engine import TorchBackend


def compact_model(**changes):
    """(model, config, tokenizer): the tiny preset with 3 recent frames and the compact prompt,
    `changes` applied to its config (e.g. nav_statement=True)."""
    fields = {"num_video_frames": 3, "nav_prompt": "compact", "nav_history": "recent"}
    config = dataclasses.replace(NVILAConfig.preset("tiny"), **{**fields, **changes})
    tokenizer = build_tokenizer(config.llm_config["vocab_size"], config.chat_template)
    return NVILAModel.from_config(config, seed=0, tokenizer=tokenizer), config, tokenizer


class ScriptedAnswer(TorchBackend):
    """A torch backend whose generation says `text`, as a trained model would: from where the
    prompt leaves it (an answer the engine began in the prompt is continued) up to the first
    stop token; scoring stays the model's own. `calls` records each generation's prompt ids and
    stop ids."""

    def __init__(self, model, tokenizer, text: str):
        super().__init__(model)
        self.ids = tokenizer(text, add_special_tokens=False).input_ids
        self.calls: list[tuple[list[int], list[int]]] = []

    def decode(self, inputs, media_embeds, stop_token_ids, max_new_tokens, output_logits):
        self.calls.append((list(inputs.input_ids), list(stop_token_ids)))
        prompt = inputs.input_ids
        begun = next((k for k in range(len(self.ids), 0, -1) if prompt[-k:] == self.ids[:k]), 0)
        said = self.ids[begun:]
        stop = next((i for i, t in enumerate(said) if t in stop_token_ids), len(said))
        return Decoded(said[:stop], "stop_token", prefill_ms=1.0, decode_ms=2.0, prompt_tokens=9)
