"""The model behind the NaVILA-Bench server: `Engine.navigate` on the request's frames.

NaVILA-format models (``nav_history: navila``, 8 frames) get the 8 frames exactly as sent: the
client has already sampled them the way the model's processor would.

Models with the "recent" history (``nav_history: recent``, e.g. navila-nano: the instruction's
first view, the views of the latest decisions, the current view, and the latest executed
actions in the prompt) need what the protocol does not carry. The responder rebuilds it from
the requests themselves (`history="episode"`, the default for such models): a request whose
only real frame is the current one starts an episode; later requests with the same
instruction and the same first real frame continue it. Each request's current frame is that
decision's view and each reply the action the client executed. Of the frames only those the
model shows are kept (the first view and the latest decision views, as JPEG bytes), with the
executed action phrases, for at most `max_episodes` episodes, least recently used dropped
first, so memory stays bounded. `history="request"`
uses only the request's own frames for every model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nvila_core.serve.protocol import BenchRequest, action_phrases, answer_phrase

if TYPE_CHECKING:
    from nvila_core.runtime.engine import Engine

log = logging.getLogger("nvila_core.serve")

HISTORY_MODES = ("auto", "episode", "request")
MAX_EPISODE_ACTIONS = 1024
"""Executed actions kept per episode: every one (a NaVILA-Bench episode has at most 100
decisions); the processor picks what the prompt states, runs merged or not."""
DECODINGS = ("generate", "choose")


class _Episode:
    """What the recent-history format shows of one episode: the first view, the latest
    decision views (base64 JPEG as sent), how many decisions so far, the executed actions
    (all of them, up to MAX_EPISODE_ACTIONS)."""

    def __init__(self, first_view: str, keep: int, keep_actions: int) -> None:
        self.first_view = first_view
        self.views: deque[str] = deque(maxlen=keep)
        self.decisions = 0
        self.actions: deque[str] = deque(maxlen=keep_actions)


class _DecisionFrames(Sequence):
    """The episode's decision frames as the processor indexes them (0 = first view, the last
    = current); frames the model never shows are not kept and raise IndexError."""

    def __init__(self, episode: _Episode) -> None:
        self.episode = episode

    def __len__(self) -> int:
        return self.episode.decisions

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(index)
        if index == 0:
            return _decode(self.episode.first_view)
        offset = index - (n - len(self.episode.views))
        if offset < 0:
            raise IndexError(f"decision frame {index} of {n} is not kept")
        return _decode(self.episode.views[offset])


def _decode(b64: str):
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.convert("RGB")


class EngineResponder:
    """Answers with an `Engine`: "generate" (greedy text) or "choose" (the most probable of the
    ten action answers, `Engine.choose`)."""

    def __init__(
        self,
        engine: Engine,
        decoding: str = "generate",
        max_new_tokens: int = 32,
        history: str = "auto",
        max_episodes: int = 8,
    ) -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        if history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {', '.join(HISTORY_MODES)}, got {history!r}")
        if max_episodes < 1:
            raise ValueError("max_episodes must be >= 1")
        self.engine = engine
        self.max_new_tokens = max_new_tokens
        config = engine.config
        recent = config.nav_history == "recent"
        if history == "auto":
            history = "episode" if recent else "request"
        if history == "episode" and not recent:
            raise ValueError(
                f"history 'episode' is for recent-history models; {config.name} samples NaVILA's "
                "history, which the request already carries"
            )
        self.history = history
        self.name = f"engine {config.name} ({engine.backend_name}, {decoding}, history {history})"
        self.answers = None
        if decoding == "choose":
            answer = engine.processor.navigation_answer
            self.answers = [answer(phrase) for phrase in action_phrases()]
        self._keep_views = max(config.num_video_frames - 1, 1)
        self._keep_actions = MAX_EPISODE_ACTIONS
        self._episodes: OrderedDict[str, _Episode] = OrderedDict()
        self._max_episodes = max_episodes
        self._current: dict[int, _Episode] = {}

    def respond(self, request: BenchRequest) -> str:
        frames: Sequence = request.images
        previous: list[str] | None = None
        if self.history == "episode":
            episode = self._episode_of(request)
            episode.decisions += 1
            episode.views.append(request.images_b64[-1])
            self._current[id(request)] = episode
            frames = _DecisionFrames(episode)
            previous = list(episode.actions)
        result = self.engine.navigate(
            request.query,
            frames,
            max_new_tokens=self.max_new_tokens,
            answers=self.answers,
            previous_actions=previous,
        )
        return result.text

    def record_reply(self, request: BenchRequest, reply: str) -> None:
        episode = self._current.pop(id(request), None)
        if episode is not None:
            episode.actions.append(answer_phrase(reply))

    def _episode_of(self, request: BenchRequest) -> _Episode:
        padding = request.padding
        first = request.images_b64[padding]
        key = hashlib.sha256(f"{request.query}\0{first}".encode()).hexdigest()
        starts = padding == len(request.images_b64) - 1  # only the current frame is real
        episode = None if starts else self._episodes.get(key)
        if episode is None:
            if not starts:
                log.warning(
                    "%s: no episode matches this request (first view and instruction unseen, "
                    "or forgotten); starting one at this request",
                    request.peer,
                )
            episode = _Episode(first, self._keep_views, self._keep_actions)
            if not starts:
                episode.decisions = 1  # the first view is a decision frame before this one
            self._episodes[key] = episode
            while len(self._episodes) > self._max_episodes:
                self._episodes.popitem(last=False)
        self._episodes.move_to_end(key)
        return episode
