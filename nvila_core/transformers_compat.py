"""The transformers releases nvila_core runs on: requirements.txt's (Python >= 3.11) and
requirements-robot.txt's (the newest for Python 3.10, e.g. on JetPack 6).

transformers renamed the language models' KV-cache argument from `past_key_values` to `cache`
between the two. The newer release still accepts `past_key_values` with a deprecation warning;
the older one does not know `cache`, and its models take **kwargs, so a `cache=` there is dropped
without an error and every decoding step runs without the cache. `cache_argument` passes the
cache under the name that the installed release declares.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def cache_argument_name() -> str:
    """`cache` or `past_key_values`: the KV-cache argument of the installed transformers'
    language models (a library-wide name; read from LlamaModel.forward)."""
    from transformers import LlamaModel

    parameters = inspect.signature(LlamaModel.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise RuntimeError(
        "the installed transformers' LlamaModel.forward takes neither `cache` nor "
        "`past_key_values`; nvila_core supports the releases pinned in requirements*.txt"
    )


def cache_argument(cache: Any) -> dict[str, Any]:
    """Keyword arguments that pass `cache` (a DynamicCache or None) to a language model."""
    return {cache_argument_name(): cache}
