"""Reference computations of the two model lineages, written from their published algorithms and
independent of nvila_core: the tests compare nvila_core against these numbers.

- "nvila": NVILA as NVlabs/VILA runs it. The prompt is the tokenizer's own chat template applied
  to one user message (`conv_mode auto`), tokenized as is; every `<image>` is one token id. The
  2x2 merge emits its cells row-major. Each image's tokens are followed by the embedding of "\\n".
- "navila": NaVILA as its own (VILA-1.5 era) code runs it. The prompt is the `llama_3`
  conversation template; `<image>` becomes the id -200 (each text chunk tokenized on its own, only
  the first keeping its BOS). The 2x2 merge emits its cells column-major. No "\\n" after a frame.

Both take the vision features of the SigLIP block `mm_vision_select_layer` (all patch tokens),
pad the patch grid at the bottom and right with zeros to an even side, put the 2x2 window
(row offset a, column offset b) into channels (2a + b) * C + c, and run LayerNorm -> Linear ->
GELU (erf) -> Linear. The vision tower and the LLM are the transformers models loaded from the
checkpoint's `vision_tower/` and `llm/` folders, as both code bases do.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, SiglipVisionModel

LINEAGES = ("nvila", "navila")
NAVILA_IMAGE_ID = -200
NAVILA_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language "
    "and vision assistant. You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
NAVILA_ROLES = (
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
)
NAVILA_SEP, NAVILA_SEP2 = "<|eot_id|>", "<|end_of_text|>"


# ---------------------------------------------------------------- prompts
def navila_question(instruction: str, num_frames: int) -> str:
    """NaVILA's navigation question (its evaluation code's f-string)."""
    history = "<image>\n" * (num_frames - 1)
    return (
        "Imagine you are a robot programmed for navigation tasks. You have been given a video "
        f"of historical observations {history}, and current observation <image>\n. Your "
        f'assigned task is: "{instruction}" Analyze this series of images to decide your next '
        "action, which could be turning left or right by a specific degree, moving forward a "
        "certain distance, or stop if the task is completed."
    )


def navila_prompt(question: str) -> str:
    """The llama_3 conversation with the question and an empty assistant turn."""
    turns = [(NAVILA_ROLES[0], question), (NAVILA_ROLES[1], None)]
    text = NAVILA_SYSTEM + NAVILA_SEP
    for n, (role, message) in enumerate(turns):
        if message:
            text += role + message + (NAVILA_SEP if n < len(turns) - 1 else NAVILA_SEP2)
        else:
            text += role
    return text


def navila_ids(tokenizer, prompt: str) -> list[int]:
    """NaVILA's tokenizer_image_token: chunks around `<image>` tokenized with special tokens,
    joined by -200; when the first chunk starts with BOS, every later chunk loses its first id."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for n, chunk in enumerate(chunks):
        if n > 0:
            ids.append(NAVILA_IMAGE_ID)
        ids.extend(chunk[offset:])
    return ids


def navila_stop_ids(tokenizer, llm_eos: int | Sequence[int]) -> set[int]:
    """NaVILA stops on its keyword (the conversation's sep, tokenized without the BOS) and on
    the LLM's eos."""
    keyword = tokenizer(NAVILA_SEP).input_ids
    if len(keyword) > 1 and keyword[0] == tokenizer.bos_token_id:
        keyword = keyword[1:]
    assert len(keyword) == 1
    eos = {llm_eos} if isinstance(llm_eos, int) else set(llm_eos)
    return {keyword[0], *eos}


def nvila_prompt(tokenizer, question: str) -> str:
    """VILA's `auto` conversation: the tokenizer's own chat template, one stripped user turn."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question.strip()}], add_generation_prompt=True, tokenize=False
    )


def nvila_ids(tokenizer, prompt: str) -> list[int]:
    return list(tokenizer(prompt).input_ids)


# ---------------------------------------------------------------- visual tokens
def merge_2x2(features: np.ndarray, lineage: str) -> np.ndarray:
    """[side*side, C] row-major patch features -> [ceil(side/2)^2, 4C] merged tokens, by loops."""
    tokens, channels = features.shape
    side = math.isqrt(tokens)
    grid = features.reshape(side, side, channels)
    n = (side + 1) // 2
    out = np.zeros((n * n, 4 * channels), dtype=features.dtype)
    for i in range(n):  # cell row
        for j in range(n):  # cell column
            index = i * n + j if lineage == "nvila" else j * n + i
            for a in range(2):
                for b in range(2):
                    r, c = 2 * i + a, 2 * j + b
                    if r < side and c < side:
                        start = (2 * a + b) * channels
                        out[index, start : start + channels] = grid[r, c]
    return out


def project(merged: np.ndarray, weights: dict[str, torch.Tensor]) -> np.ndarray:
    """LayerNorm (eps 1e-5) -> Linear -> GELU (erf) -> Linear, in float64."""
    x = torch.from_numpy(merged).double()
    w = {k: v.double() for k, v in weights.items()}
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + 1e-5) * w["layers.1.weight"] + w["layers.1.bias"]
    x = x @ w["layers.2.weight"].T + w["layers.2.bias"]
    x = 0.5 * x * (1.0 + torch.erf(x / np.sqrt(2.0)))
    x = x @ w["layers.4.weight"].T + w["layers.4.bias"]
    return x.numpy()


class ReferenceModel:
    """One VILA split-layout checkpoint run the way `lineage`'s own code runs it (float32)."""

    def __init__(self, root: str | Path, lineage: str):
        if lineage not in LINEAGES:
            raise ValueError(f"unknown lineage {lineage!r}")
        root = Path(root)
        self.lineage = lineage
        top = json.loads((root / "config.json").read_text())
        self.select_layer = int(top.get("mm_vision_select_layer", -2))
        self.vision = SiglipVisionModel.from_pretrained(
            str(root / "vision_tower"), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.llm = AutoModelForCausalLM.from_pretrained(
            str(root / "llm"), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.projector = load_file(str(root / "mm_projector" / "model.safetensors"))

    @torch.no_grad()
    def visual_tokens(self, pixels: torch.Tensor) -> list[np.ndarray]:
        """[N, 3, S, S] -> per image its projected tokens [tokens, D] (float64)."""
        out = self.vision(pixel_values=pixels.float(), output_hidden_states=True)
        features = out.hidden_states[self.select_layer].double().numpy()
        return [project(merge_2x2(f, self.lineage), self.projector) for f in features]

    @torch.no_grad()
    def embeds(
        self, input_ids: Sequence[int], pixels: torch.Tensor, image_id: int, newline_id: int | None
    ) -> torch.Tensor:
        """[1, L, D]: text embeddings with each image position replaced by its tokens (and, for
        NVILA, the "\\n" embedding)."""
        table = self.llm.get_input_embeddings().weight.double()
        images = iter(self.visual_tokens(pixels))
        rows = []
        for token in input_ids:
            if token == image_id:
                rows.extend(torch.from_numpy(next(images)))
                if newline_id is not None:
                    rows.append(table[newline_id])
            else:
                rows.append(table[token])
        assert next(images, None) is None, "more images than image positions"
        return torch.stack(rows)[None].float()

    @torch.no_grad()
    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.llm(inputs_embeds=embeds).logits[0]

    @torch.no_grad()
    def greedy(self, embeds: torch.Tensor, stop_ids: set[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding without a cache: the whole sequence is re-run for every token."""
        table = self.llm.get_input_embeddings().weight
        out: list[int] = []
        for _ in range(max_new_tokens):
            token = int(self.logits(embeds)[-1].argmax())
            out.append(token)
            if token in stop_ids:
                break
            embeds = torch.cat([embeds, table[token][None, None]], dim=1)
        return out
