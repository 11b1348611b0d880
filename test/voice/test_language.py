"""The command grammar, the language-model corpus and the pronouncing dictionary."""

import re

import pytest
from pocketsphinx import get_model_path

from nvila_nav.actions import ACTION_VOCABULARY
from nvila_nav.sim.episodes import generate_episode
from nvila_nav.sim.furniture import COLOURS, KINDS
from nvila_nav.voice import language
from nvila_nav.voice.text import normalize

CMUDICT = get_model_path("en-us/cmudict-en-us.dict")


def test_grammar_covers_the_navigation_vocabulary():
    grammar = language.command_grammar("hey robot")
    words = {w for sentence in grammar.expand() for w in sentence.split()}
    spoken_actions = set(normalize(" ".join(ACTION_VOCABULARY)).split())
    nouns = {w for kind in KINDS.values() for noun in kind.nouns for w in noun.split()}
    assert spoken_actions | set(COLOURS) | nouns | {"left", "right", "hey", "robot"} <= words
    sentences = set(grammar.expand())
    assert {
        "stop",
        "halt",
        "hey robot stop",
        "hey robot move forward fifty centimeters",
    } <= sentences
    assert "hey robot go to the purple potted plant" in sentences


def test_grammar_renders_as_jsgf_that_pocketsphinx_parses():
    from pocketsphinx import Decoder

    jsgf = language.command_grammar("ok rover").to_jsgf()
    assert jsgf.startswith("#JSGF V1.0;")
    assert re.search(r"^public <utterance> = <wake> <command> \| <command>;$", jsgf, re.M)
    decoder = Decoder(hmm=get_model_path("en-us/en-us"), dict=CMUDICT, loglevel="FATAL")
    decoder.add_jsgf_string("commands", jsgf)


def test_corpus_is_train_split_simulator_text():
    corpus = language.read_corpus()
    assert len(corpus) >= 3000
    first = generate_episode("train", 0, seed=0).instruction_text
    assert corpus[0] == normalize(first)
    val = normalize(generate_episode("val_unseen", 0, seed=0).instruction_text)
    assert val not in set(corpus)


def test_language_model_knows_wake_phrase_and_stops():
    sentences = language.lm_sentences("hey robot", ["walk to the red chair"])
    assert "hey robot walk to the red chair" in sentences
    assert "walk to the red chair" in sentences
    assert sentences.count("stop") > 10
    arpa = language.build_arpa(sentences)
    assert "\\data\\" in arpa and "ngram 3=" in arpa


def test_dictionary_has_every_pronunciation_and_names_unknown_words():
    lines = language.dictionary(["read", "stop"], CMUDICT).splitlines()
    assert lines[0].startswith("read ") and lines[1].startswith("read(2) ")
    with pytest.raises(ValueError, match="zorblax"):
        language.dictionary(["stop", "zorblax"], CMUDICT)
