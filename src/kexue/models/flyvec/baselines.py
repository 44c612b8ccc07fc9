"""Baselines FlyVec is compared with on the same tokens (post 8): gensim word2vec, and SimHash / FlyHash of its
vectors (the binarisers Su says FlyVec has no clear edge over).

gensim is an optional dependency (the ``text`` extra): it is imported only when :func:`train_word2vec` runs, and
its absence is a one-line :class:`~kexue.errors.KexueError` naming the install command.
"""

from collections.abc import Sequence
from typing import Any

import torch

from kexue.errors import KexueError
from kexue.models.flyvec.text import UNK, Vocabulary, normalize_token
from kexue.ops.sparse import flyhash, flyhash_projection, simhash, simhash_projection


def _gensim() -> Any:
    try:
        import gensim  # noqa: F401
        from gensim.models import Word2Vec
    except ImportError:
        raise KexueError("the word2vec baseline needs gensim: pip install 'kexue[text]' (or pip install gensim)") \
            from None
    return Word2Vec


def word2vec_corpus(docs: Sequence[Sequence[str]], vocab: Vocabulary) -> list[list[str]]:
    """The token lists word2vec sees: FlyVec's normalisation, out-of-vocabulary words as ``<UNK>``, stop words
    kept (word2vec down-samples frequent words itself), so both models have the same vocabulary of content words."""
    cache: dict[str, str] = {}

    def norm(token: str) -> str:
        out = cache.get(token)
        if out is None:
            t = normalize_token(token)
            out = cache[token] = t if (t in vocab.index or t in vocab.stop_words) else UNK
        return out

    return [[norm(t) for t in doc] for doc in docs]


def train_word2vec(docs: Sequence[Sequence[str]], *, dim: int = 100, window: int = 5, sg: bool = False,
                   epochs: int = 5, min_count: int = 5, negative: int = 5, sample: float = 1e-3, workers: int = 2,
                   seed: int = 0) -> Any:
    """gensim ``Word2Vec`` trained on ``docs`` (token lists); returns its ``KeyedVectors``.

    Defaults are gensim's CBOW with dim 100 (the issue's benchmark settings); ``workers > 1`` makes gensim's
    result depend on thread timing, so runs are reproducible only with ``workers=1``.
    """
    Word2Vec = _gensim()
    if not docs:
        raise ValueError("docs is empty: nothing to train word2vec on")
    model = Word2Vec(sentences=docs, vector_size=dim, window=window, sg=int(sg), epochs=epochs, min_count=min_count,
                     negative=negative, sample=sample, workers=workers, seed=seed)
    return model.wv


def keyed_vectors_to_tensor(wv: Any, words: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of gensim ``KeyedVectors`` for ``words``: ``(vectors [n, d], found [n] bool)``; missing rows are 0."""
    found = torch.tensor([w in wv.key_to_index for w in words], dtype=torch.bool)
    vectors = torch.zeros(len(words), wv.vector_size)
    rows = [wv.key_to_index[w] for w, f in zip(words, found.tolist(), strict=True) if f]
    if rows:
        vectors[found] = torch.from_numpy(wv.vectors[rows]).float()
    return vectors, found


def simhash_codes(vectors: torch.Tensor, n_bits: int, *, seed: int = 0) -> torch.Tensor:
    """SimHash (sign random projection) codes of dense ``vectors [n, d]``: bool ``[n, n_bits]``."""
    gen = torch.Generator().manual_seed(seed)
    return simhash(vectors, simhash_projection(vectors.shape[1], n_bits, generator=gen))


def flyhash_codes(vectors: torch.Tensor, n_units: int, k: int, *, n_inputs: int | None = None,
                  seed: int = 0) -> torch.Tensor:
    """FlyHash codes of dense ``vectors [n, d]``: mean-centred, random sparse 0/1 expansion to ``n_units``, top-k.

    Args:
        n_inputs: inputs per unit (default: about 10% of d, at least 1; the fly's ratio is ~6/50).
    """
    d = vectors.shape[1]
    n_inputs = n_inputs if n_inputs is not None else max(1, round(0.1 * d))
    gen = torch.Generator().manual_seed(seed)
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    return flyhash(centred, flyhash_projection(d, n_units, n_inputs, generator=gen), k)


__all__ = ["flyhash_codes", "keyed_vectors_to_tensor", "simhash_codes", "train_word2vec", "word2vec_corpus"]
