"""FlyVec's tokenisation, vocabulary and sparse window encoding (post 8; the official code's ``tokenizer.py``).

Following the official FlyVec code (bhoov/flyvec):

- tokens are lower-cased; any token containing a digit becomes ``<NUM>``;
- the vocabulary keeps ``<UNK>`` (id 0) and ``<NUM>`` (id 1), then the words that occur at least ``min_count``
  times (the official code uses gensim's ``no_below``, which counts documents; we count tokens, like word2vec's
  ``min_count``, because our documents range from one sentence to a whole book), dropping words found in more than
  ``max_doc_fraction`` of the documents (gensim's ``no_above``), keeping the ``vocab_size`` most frequent;
- stop words get id ``STOP`` (-1): they keep their place in a window but add nothing to its input;
- out-of-vocabulary words get ``<UNK>``. During training ``<UNK>`` is treated like a stop word (id -1): a window
  never learns from "some rare word", and no window is centred on one.

**Windows** (:class:`EncodedCorpus`). Every in-vocabulary token is the centre (target) of one window of
``window`` positions, ``window // 2`` on each side; positions outside the token's document are empty (-1), so a
window never crosses a document boundary. (The official trainer only takes windows that fit wholly inside a chunk
and also centres windows on stop words; padding uses every token of short documents as a target.) Documents are
stored back to back with ``window // 2`` empty slots between them, so a window is a plain slice of one flat id
array: ``tokens[c - h : c + h + 1]``.

**Input vector** of a window with target w and context words c (spec section 2.1):
``v = [sum_c e_c ; e_w]`` in R^(2V), context block first, target at offset V; a context word occurring twice
counts twice (as in the official CUDA kernel). It is never built densely: :func:`window_indices` gives the ``[B,
window]`` row indices into a ``[2V + 1, K]`` table whose last row (index 2V) is an all-zero sentinel for empty
slots; :func:`window_dense` is its slow twin for tiny problems.
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kexue.errors import KexueError

UNK, NUM = "<UNK>", "<NUM>"
UNK_ID, NUM_ID = 0, 1
STOP = -1  # id of stop words, and of empty window slots

# Common English function words (articles, pronouns, auxiliaries, prepositions, conjunctions): they carry little
# topical information and would otherwise dominate every context.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below between
both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few for from
further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how
how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't my myself no nor not of
off on once only or other ought our ours ourselves out over own same shan't she she'd she'll she's should shouldn't
so some such than that that's the their theirs them themselves then there there's these they they'd they'll they're
they've this those through to too under until up very was wasn't we we'd we'll we're we've were weren't what what's
when when's where where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're
you've your yours yourself yourselves s t d ll m re ve also may might must shall will upon thee thou thy unto ye
""".split())  # noqa: SIM905

_TOKEN = re.compile(r"[a-z0-9']+")
_DIGIT = re.compile(r"[0-9]")


class UnknownWordError(KexueError, KeyError):
    """A word is not in the vocabulary (and the call's policy is to refuse it rather than map it to ``<UNK>``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def normalize_token(token: str) -> str:
    """Lower-case ``token``; a token containing a digit becomes ``<NUM>``; the special tokens pass unchanged."""
    if token in (UNK, NUM):
        return token
    return NUM if _DIGIT.search(token) else token.lower()


def tokenize(text: str) -> list[str]:
    """Raw text -> normalised tokens: lower case, ``[a-z0-9']+`` runs, apostrophes trimmed, digits -> ``<NUM>``."""
    out = []
    for match in _TOKEN.findall(text.lower()):
        token = match.strip("'")
        if token:
            out.append(normalize_token(token))
    return out


class _Memo(dict):
    """A dict that computes missing values with ``fn`` once per distinct key (tokens repeat a lot)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self[key] = self.fn(key)
        return value


def _documents(corpus: Iterable[str | Sequence[str]]) -> list[list[str]]:
    """Normalised token lists of ``corpus`` (each document raw text or a token sequence)."""
    norm = _Memo(normalize_token)
    docs = []
    for i, doc in enumerate(corpus):
        if isinstance(doc, str):
            docs.append(tokenize(doc))
        elif isinstance(doc, Sequence):
            docs.append(list(map(norm.__getitem__, doc)))
        else:
            raise TypeError(f"corpus document {i} must be a str or a sequence of str tokens, got {type(doc).__name__}")
    return docs


@dataclass
class Vocabulary:
    """FlyVec's vocabulary: ``<UNK>`` (id 0), ``<NUM>`` (id 1), then words by decreasing count.

    Attributes:
        words: id -> word.
        counts: int64 ``[V]``: occurrences in the corpus it was built from (``<UNK>``: out-of-vocabulary tokens).
        stop_words: words encoded as ``STOP`` (-1); never in ``words``.
    """

    words: list[str]
    counts: np.ndarray
    stop_words: frozenset[str] = STOP_WORDS
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.words[:2] != [UNK, NUM]:
            raise ValueError(f"words must start with {UNK!r}, {NUM!r}, got {self.words[:2]}")
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.counts.shape != (len(self.words),):
            raise ValueError(f"counts must have shape ({len(self.words)},), got {self.counts.shape}")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("words must be distinct")
        self.stop_words = frozenset(self.stop_words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def build(cls, corpus: Iterable[str | Sequence[str]], *, vocab_size: int = 20_000, min_count: int = 5,
              max_doc_fraction: float = 0.8, stop_words: Iterable[str] = STOP_WORDS) -> "Vocabulary":
        """Count the corpus and keep the ``vocab_size`` most frequent eligible words (specials included).

        Args:
            corpus: documents, each raw text or a sequence of tokens.
            vocab_size: total size V including ``<UNK>`` and ``<NUM>`` (>= 3).
            min_count: a word must occur at least this many times.
            max_doc_fraction: drop words found in more than this fraction of the documents (in (0, 1]).
            stop_words: encoded as ``STOP``; never in the vocabulary.

        Raises:
            ValueError: on an empty corpus (no tokens), or no word passing the filters.
        """
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (<UNK>, <NUM> and one word), got {vocab_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if not 0 < max_doc_fraction <= 1:
            raise ValueError(f"max_doc_fraction must be in (0, 1], got {max_doc_fraction}")
        docs = _documents(corpus)
        counts: Counter[str] = Counter()
        doc_freq: Counter[str] = Counter()
        for doc in docs:
            counts.update(doc)
            doc_freq.update(set(doc))
        total = sum(counts.values())
        if total == 0:
            raise ValueError("the corpus is empty: no tokens to build a vocabulary from")
        stop = frozenset(stop_words)
        max_docs = max_doc_fraction * len(docs)
        eligible = [(w, c) for w, c in counts.items()
                    if c >= min_count and doc_freq[w] <= max_docs and w not in stop and w not in (UNK, NUM)]
        if not eligible:
            raise ValueError(f"no word occurs at least min_count={min_count} times (stop words, <NUM> and the "
                             f"max_doc_fraction={max_doc_fraction} filter excluded)")
        eligible.sort(key=lambda wc: (-wc[1], wc[0]))  # deterministic ids whatever the document order
        kept = eligible[: vocab_size - 2]
        n_stop = sum(c for w, c in counts.items() if w in stop)
        n_unk = total - n_stop - counts[NUM] - sum(c for _, c in kept)
        return cls([UNK, NUM] + [w for w, _ in kept], np.array([n_unk, counts[NUM]] + [c for _, c in kept]), stop)

    # --- lookups ------------------------------------------------------------------------------------------------

    def _lookup(self, token: str) -> int:
        if token in self.stop_words:
            return STOP
        return self.index.get(token, UNK_ID)

    def id(self, word: str) -> int:
        """The id of ``word`` (normalised first).

        Raises:
            UnknownWordError: ``word`` is out of vocabulary or a stop word (this call never answers ``<UNK>``).
        """
        token = normalize_token(word)
        if token in self.stop_words:
            raise UnknownWordError(f"{word!r} is a stop word: it has no embedding (stop words are skipped)")
        if token not in self.index:
            raise UnknownWordError(f"{word!r} is not in the vocabulary of {len(self)} words")
        return self.index[token]

    def ids(self, words: Sequence[str], *, unknown: str = "error") -> torch.Tensor:
        """int64 ids of ``words``.

        Args:
            unknown: ``"error"`` (raise :class:`UnknownWordError`), ``"unk"`` (map to ``<UNK>``, stop words to
                ``STOP``) or ``"skip"`` (map out-of-vocabulary words and stop words to ``STOP``).
        """
        if unknown == "error":
            return torch.tensor([self.id(w) for w in words], dtype=torch.long)
        if unknown not in ("unk", "skip"):
            raise ValueError(f"unknown must be 'error', 'unk' or 'skip', got {unknown!r}")
        ids = [self._lookup(normalize_token(w)) for w in words]
        if unknown == "skip":
            ids = [STOP if i == UNK_ID else i for i in ids]
        return torch.tensor(ids, dtype=torch.long)

    # --- corpus encoding ----------------------------------------------------------------------------------------

    def encode(self, corpus: Iterable[str | Sequence[str]], window: int) -> "EncodedCorpus":
        """Encode ``corpus`` for training with windows of ``window`` positions (see the module docstring).

        Raises:
            ValueError: if the corpus has no in-vocabulary token to centre a window on.
        """
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd int >= 1 (target plus equal context on both sides), got {window}")
        half = window // 2
        lookup = _Memo(self._lookup)
        pieces, n_docs, n_tokens = [np.full(half, STOP, dtype=np.int64)], 0, 0
        gap = np.full(half, STOP, dtype=np.int64)
        for doc in _documents(corpus):
            if not doc:
                continue
            pieces.append(np.fromiter(map(lookup.__getitem__, doc), dtype=np.int64, count=len(doc)))
            pieces.append(gap)
            n_docs, n_tokens = n_docs + 1, n_tokens + len(doc)
        tokens = np.concatenate(pieces)
        tokens[tokens == UNK_ID] = STOP  # <UNK> teaches nothing: an empty slot, never a centre
        centres = np.flatnonzero(tokens >= 0)
        if len(centres) == 0:
            raise ValueError("the corpus is empty: no in-vocabulary token to train on")
        counts = np.bincount(tokens[centres], minlength=len(self))
        return EncodedCorpus(torch.from_numpy(tokens), torch.from_numpy(centres), window, len(self),
                             torch.from_numpy(counts), n_docs, n_tokens)


@dataclass
class EncodedCorpus:
    """A corpus as one flat id array with empty gaps between documents, and the positions of window centres.

    Attributes:
        tokens: int64 ``[T]``: ids, ``STOP`` (-1) for stop words, ``<UNK>`` and the gaps.
        centres: int64 ``[N]``: positions in ``tokens`` of the window centres (every id >= 0).
        window: positions per window (odd).
        vocab_size: V.
        counts: int64 ``[V]``: occurrences of each id among the centres (the frequencies p of the rule).
        n_documents, n_tokens: documents and tokens read (stop words and ``<UNK>`` included).
    """

    tokens: torch.Tensor
    centres: torch.Tensor
    window: int
    vocab_size: int
    counts: torch.Tensor
    n_documents: int
    n_tokens: int

    def __len__(self) -> int:
        return len(self.centres)

    def windows(self, centres: torch.Tensor) -> torch.Tensor:
        """Word ids ``[B, window]`` of the windows around ``centres`` (positions), ``STOP`` where empty."""
        half = self.window // 2
        offsets = torch.arange(-half, half + 1, device=centres.device)
        return self.tokens.to(centres.device)[centres.unsqueeze(1) + offsets]


def window_indices(words: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Sparse input of windows: rows of the ``[2V + 1, K]`` table each window slot reads.

    Args:
        words: int64 ``[B, W]`` word ids of windows (odd W, target in the middle), ``STOP`` (-1) where empty.
        vocab_size: V.

    Returns:
        int64 ``[B, W]``: context word c -> c, target w -> V + w, empty -> 2V (the zero sentinel row).
    """
    if words.dim() != 2 or words.shape[1] % 2 == 0:
        raise ValueError(f"words must be [B, W] with odd W, got shape {tuple(words.shape)}")
    idx = words.clone()
    idx[:, words.shape[1] // 2] += vocab_size
    return idx.masked_fill_(words < 0, 2 * vocab_size)


def window_dense(words: torch.Tensor, vocab_size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Slow twin of :func:`window_indices`: the dense inputs ``v = [BoW(context); e_target]``, ``[B, 2V]``."""
    idx = window_indices(words, vocab_size)
    dense = torch.zeros(len(words), 2 * vocab_size + 1, dtype=dtype)
    for b in range(len(words)):
        for i in idx[b].tolist():
            dense[b, i] += 1
    return dense[:, : 2 * vocab_size]
