"""What the recogniser expects to hear: a JSGF grammar and an n-gram language model, both built
from the navigation vocabulary, plus the pronouncing dictionary for their words.

A language model matters more than anything else for offline recognition with a small acoustic
model, so the default one is trained on what users of this package say:

- the instructions the simulator writes (`data/train_instructions.txt.gz`: train-split episodes
  only, never the val splits that tests score; regenerate with
  `python -m nvila_nav.voice.language --episodes 4000`),
- every sentence of the command grammar (NaVILA's actions with their distances and angles,
  directions, landmark names and colours, rooms, stop words), each also after the wake phrase.

The grammar is also a search of its own (`language_model: grammar`), for deployments that want
only short commands. It is kept small on purpose: pocketsphinx expands every rule reference
into its own finite-state network, and a grammar covering the simulator's full instruction
language decoded 7-20x slower than the n-gram model.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nvila_nav.actions import ALL_ACTIONS
from nvila_nav.sim.furniture import COLOURS, KINDS
from nvila_nav.sim.world import ROOM_RECIPES
from nvila_nav.voice.text import normalize

CORPUS_FILE = Path(__file__).parent / "data" / "train_instructions.txt.gz"
STOP_WORDS = ("stop", "halt", "freeze")
DEFAULT_WAKE_PHRASE = "hey robot"

_DISCOUNT_MASS = 0.01
"""Absolute-discount mass of the trigram model: small, because the corpus covers the domain and
unseen word sequences are far more often recognition errors than new phrasings (WER on the
spoken val_unseen instructions: 0.5 → 15 %, 0.05 → 9 %, 0.01 → 9 %)."""
_STOP_REPEATS = 50
"""Copies of each bare stop utterance in the corpus, so "stop" alone is a likely sentence."""


@dataclass(frozen=True)
class Grammar:
    """A context-free command grammar: rule name → alternatives (token lists; "<rule>" refers)."""

    rules: dict[str, tuple[tuple[str, ...], ...]]
    public: str

    def to_jsgf(self, name: str = "navigation") -> str:
        lines = ["#JSGF V1.0;", f"grammar {name};"]
        for rule, alternatives in self.rules.items():
            body = " | ".join(" ".join(alt) if alt else "<NULL>" for alt in alternatives)
            prefix = "public " if rule == self.public else ""
            lines.append(f"{prefix}<{rule}> = {body};")
        return "\n".join(lines) + "\n"

    def expand(self, rule: str | None = None) -> Iterator[str]:
        """Every sentence of `rule` (default: the public rule)."""
        for words in self._expand(f"<{rule or self.public}>"):
            yield " ".join(words)

    def _expand(self, token: str) -> Iterator[tuple[str, ...]]:
        if not (token.startswith("<") and token.endswith(">")):
            yield (token,)
            return
        for alternative in self.rules[token[1:-1]]:
            yield from self._expand_sequence(alternative)

    def _expand_sequence(self, tokens: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if not tokens:
            yield ()
            return
        for head in self._expand(tokens[0]):
            for tail in self._expand_sequence(tokens[1:]):
                yield head + tail


def _words(text: str) -> tuple[str, ...]:
    return tuple(normalize(text).split())


def command_grammar(wake_phrase: str = DEFAULT_WAKE_PHRASE) -> Grammar:
    """Short commands from the navigation vocabulary, optionally after the wake phrase."""
    nouns = sorted({noun for kind in KINDS.values() for noun in kind.nouns})
    actions = [_words(a.to_text()) for a in ALL_ACTIONS if not a.is_stop]
    rules: dict[str, tuple[tuple[str, ...], ...]] = {
        "wake": (_words(wake_phrase),),
        "stop": tuple((word,) for word in STOP_WORDS) + tuple((w, w) for w in STOP_WORDS),
        "colour": tuple((colour,) for colour in COLOURS),
        "thing": tuple(_words(noun) for noun in nouns),
        "landmark": (("the", "<colour>", "<thing>"), ("the", "<thing>")),
        "room": tuple(("the", *_words(room)) for room in ROOM_RECIPES),
        "direction": (("left",), ("right",)),
        "place": (("<landmark>",), ("<room>",)),
        "action": (
            *actions,
            ("move", "forward"),
            ("turn", "<direction>"),
            ("turn", "around"),
            ("go", "to", "<place>"),
            ("go", "into", "<room>"),
            ("go", "through", "<landmark>"),
            ("walk", "to", "<place>"),
            ("stop", "next", "to", "<landmark>"),
            ("stop", "near", "<landmark>"),
        ),
        "command": (("<stop>",), ("<action>",)),
        "utterance": (("<wake>", "<command>"), ("<command>",)),
    }
    return Grammar(rules, public="utterance")


def read_corpus(path: Path = CORPUS_FILE) -> list[str]:
    """The shipped simulator instructions, normalised to spoken words."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [normalize(line) for line in f if line.strip()]


def lm_sentences(wake_phrase: str = DEFAULT_WAKE_PHRASE, corpus: Iterable[str] = ()) -> list[str]:
    """The training text of the n-gram model: corpus and grammar, with and without wake phrase."""
    wake = " ".join(_words(wake_phrase))
    commands = list(command_grammar(wake_phrase).expand("command"))
    instructions = [*corpus, *commands]
    stops = [word for word in STOP_WORDS] * _STOP_REPEATS
    return [*instructions, *(f"{wake} {s}" for s in instructions), *stops]


def build_arpa(sentences: list[str]) -> str:
    """A trigram model in ARPA text form (pocketsphinx's own builder: absolute discounting)."""
    from pocketsphinx.lm import ArpaBoLM

    model = ArpaBoLM(text="\n".join(sentences), add_start=True, discount_mass=_DISCOUNT_MASS)
    model.compute()
    out = io.StringIO()
    model.write(out)
    return out.getvalue()


@cache
def _cmudict(path: str) -> dict[str, tuple[str, ...]]:
    entries: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.strip().partition(" ")
            base = re.sub(r"\(\d+\)$", "", word)
            entries.setdefault(base, []).append(phones.strip())
    return {word: tuple(prons) for word, prons in entries.items()}


def dictionary(words: Iterable[str], cmudict_path: str) -> str:
    """Pronouncing-dictionary lines for `words` (all variants), from pocketsphinx's CMUdict.

    Raises ValueError naming any word CMUdict lacks (a wake phrase with an unusual word).
    """
    cmudict = _cmudict(cmudict_path)
    unknown = sorted({w for w in words if w not in cmudict})
    if unknown:
        raise ValueError(f"not in the pronouncing dictionary: {', '.join(unknown)}")
    lines = []
    for word in sorted(set(words)):
        for i, phones in enumerate(cmudict[word]):
            lines.append(f"{word}{f'({i + 1})' if i else ''} {phones}")
    return "\n".join(lines) + "\n"


def _train_instruction(index: int) -> str:
    from nvila_nav.sim.episodes import generate_episode

    return generate_episode("train", index, seed=0).instruction_text


def write_corpus(n_episodes: int, path: Path = CORPUS_FILE, workers: int = 2) -> Path:
    """Regenerate the shipped corpus from train-split episodes (deterministic bytes)."""
    with ProcessPoolExecutor(workers) as pool:
        texts = list(pool.map(_train_instruction, range(n_episodes), chunksize=50))
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(texts) + "\n").encode())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the voice language-model corpus.")
    parser.add_argument("--episodes", type=int, default=4000, help="train-split episodes")
    parser.add_argument("--out", type=Path, default=CORPUS_FILE)
    args = parser.parse_args(argv)
    print(write_corpus(args.episodes, args.out))


if __name__ == "__main__":
    main()
