"""Text loaders: the tokenised corpus, a frequency-sorted vocabulary, word-similarity and analogy sets.

The corpus is built by :mod:`kexue.data.corpus` when ``kexue data fetch text`` runs; the evaluation sets come from
the gensim wheel's test data (``kexue data fetch wordsim``). Everything is lower case, like the corpus.
"""

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kexue.data.cache import dataset_dir
from kexue.data.corpus import CORPUS_FILE, COUNTS_FILE

_SIMILARITY_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def iter_corpus(data_dir: str | Path | None = None, max_tokens: int | None = None) -> Iterator[list[str]]:
    """Stream the ``text`` corpus one document (a list of tokens) at a time.

    Args:
        data_dir: the cache folder.
        max_tokens: stop after this many tokens (the last document is cut); ``None`` reads all (~12.6M).
    """
    path = dataset_dir("text", data_dir) / CORPUS_FILE
    left = max_tokens
    with open(path, encoding="ascii") as f:
        for line in f:
            tokens = line.split()
            if left is not None:
                tokens = tokens[:left]
                left -= len(tokens)
            if tokens:
                yield tokens
            if left == 0:
                return


def load_corpus(data_dir: str | Path | None = None, max_tokens: int | None = None) -> list[list[str]]:
    """The ``text`` corpus as a list of documents (lists of tokens); see :func:`iter_corpus`."""
    return list(iter_corpus(data_dir, max_tokens))


def corpus_counts(data_dir: str | Path | None = None) -> dict:
    """Per-piece counts of the corpus: ``{"pieces": {name: {"source", "documents", "tokens"}}, "tokens", ...}``."""
    return json.loads((dataset_dir("text", data_dir) / COUNTS_FILE).read_text())


@dataclass
class Vocab:
    """Tokens sorted by decreasing count (ties by token), with their counts and ids.

    Attributes:
        tokens: id -> token.
        counts: int64 ``[V]``, count of each token in the documents it was built from.
        index: token -> id.
    """

    tokens: list[str]
    counts: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """int64 ids ``[L']`` of the in-vocabulary tokens; out-of-vocabulary ones are dropped (word2vec style)."""
        return np.fromiter((self.index[t] for t in tokens if t in self.index), dtype=np.int64)


def build_vocab(docs: Iterable[Iterable[str]], min_count: int = 5, max_size: int | None = None) -> Vocab:
    """Count tokens and keep those seen at least ``min_count`` times, the ``max_size`` most frequent at most.

    Sorting by (-count, token) makes ids deterministic whatever the document order.
    """
    counter = Counter(t for doc in docs for t in doc)
    kept = sorted(((t, c) for t, c in counter.items() if c >= min_count), key=lambda tc: (-tc[1], tc[0]))
    kept = kept[:max_size] if max_size is not None else kept
    return Vocab([t for t, _ in kept], np.array([c for _, c in kept], dtype=np.int64))


def load_similarity(name: str, data_dir: str | Path | None = None) -> list[tuple[str, str, float]]:
    """A word-similarity set: ``"wordsim353"`` (353 pairs, relatedness 0-10) or ``"simlex999"`` (999, similarity).

    Returns:
        ``(word1, word2, human score)`` triples, words lower-cased.
    """
    if name not in _SIMILARITY_FILES:
        raise ValueError(f"name={name!r} is not one of {', '.join(map(repr, _SIMILARITY_FILES))}")
    path = dataset_dir("wordsim", data_dir) / _SIMILARITY_FILES[name]
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            w1, w2, score = line.split("\t")[:3]
            pairs.append((w1.lower(), w2.lower(), float(score)))
    return pairs


def load_analogies(data_dir: str | Path | None = None) -> list[tuple[str, str, str, str, str]]:
    """The Google analogy questions (19,544): ``(section, a, b, c, d)`` meaning a : b :: c : d, lower-cased.

    Sections are the file's ``: name`` headers (``capital-common-countries``, ..., ``gram9-plural-verbs``).
    """
    path = dataset_dir("wordsim", data_dir) / "questions-words.txt"
    questions, section = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
        elif line.strip():
            a, b, c, d = line.lower().split()
            questions.append((section, a, b, c, d))
    return questions
