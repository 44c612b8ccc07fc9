"""Tokenizer, vocabulary, corpus streaming and (when fetched) the corpus and evaluation sets."""

import re

import numpy as np
import pytest

from kexue.data import (
    build_vocab,
    corpus_counts,
    iter_corpus,
    load_analogies,
    load_corpus,
    load_similarity,
)
from kexue.data.cache import MARKER
from kexue.data.corpus import tokenize


def test_tokenize():
    text = "Don't go -- Café NAÏVE ’Tis the 1990s! ''quoted'' e-mail"
    assert tokenize(text) == ["don't", "go", "cafe", "naive", "tis", "the", "1990", "s", "quoted", "e", "mail"]


def test_vocab_sorted_by_count_then_token():
    docs = [["b", "a", "c", "a"], ["c", "b", "d"], ["a", "e"]]
    vocab = build_vocab(docs, min_count=1)
    assert vocab.tokens == ["a", "b", "c", "d", "e"]  # a:3, then b,c tied at 2, then d,e tied at 1
    assert vocab.counts.tolist() == [3, 2, 2, 1, 1] and vocab.counts.dtype == np.int64
    assert vocab.index["c"] == 2 and "z" not in vocab and len(vocab) == 5
    assert build_vocab(reversed(docs), min_count=1).tokens == vocab.tokens  # order-independent
    assert build_vocab(docs, min_count=2).tokens == ["a", "b", "c"]
    assert build_vocab(docs, min_count=1, max_size=2).tokens == ["a", "b"]
    np.testing.assert_array_equal(vocab.encode(["e", "z", "a"]), [4, 0])


def test_iter_corpus_stops_at_max_tokens(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "corpus.txt").write_text("a b c\nd e\nf g h i\n")
    (tmp_path / "text" / MARKER).write_text("{}")
    assert load_corpus(tmp_path) == [["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i"]]
    assert load_corpus(tmp_path, max_tokens=4) == [["a", "b", "c"], ["d"]]
    assert load_corpus(tmp_path, max_tokens=5) == [["a", "b", "c"], ["d", "e"]]
    assert sum(map(len, iter_corpus(tmp_path, max_tokens=100))) == 9


def test_bad_similarity_name(tmp_path):
    with pytest.raises(ValueError, match="wordsim353"):
        load_similarity("men3000", tmp_path)


# --- fetched sets -------------------------------------------------------------------------------------------------


def test_corpus(requires):
    requires("text")
    counts = corpus_counts()
    assert 12_000_000 < counts["tokens"] < 13_500_000
    assert sum(p["tokens"] for p in counts["pieces"].values()) == counts["tokens"]
    assert set(counts["pieces"]) == {"sotu", "brown", "nlp-corpus", "kjv", "gcide", "wordnet", "spamassassin", "gensim"}
    assert counts["pieces"]["kjv"]["documents"] == 1189  # one per chapter
    docs = load_corpus(max_tokens=200_000)
    assert sum(map(len, docs)) == 200_000
    token = re.compile(r"[a-z']+|[0-9]+")
    assert all(token.fullmatch(t) for doc in docs for t in doc)
    assert docs[0][:6] == ["fellow", "citizens", "of", "the", "senate", "and"]  # Washington, 1790
    vocab = build_vocab(docs, min_count=5)
    assert vocab.tokens[0] == "the"


def test_similarity_and_analogy_sets(requires):
    requires("wordsim")
    wordsim, simlex = load_similarity("wordsim353"), load_similarity("simlex999")
    assert len(wordsim) == 353 and len(simlex) == 999
    assert ("tiger", "cat", 7.35) in wordsim and ("smart", "intelligent", 9.2) in simlex
    assert all(0 <= s <= 10 for _, _, s in wordsim + simlex)
    analogies = load_analogies()
    assert len(analogies) == 19_544
    assert len({q[0] for q in analogies}) == 14
    assert analogies[0] == ("capital-common-countries", "athens", "greece", "baghdad", "iraq")
