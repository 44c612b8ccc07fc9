"""Word-embedding evaluation for any embedding: word-similarity correlation and analogies (post 8's protocol).

An embedding is given as a vocabulary (word -> row) plus either dense vectors (cosine similarity) or k-hot codes
(overlap of active units). The out-of-vocabulary policy is stated, not hidden: a pair or question with a word
missing from the vocabulary is **skipped** and counted, and every score comes with its coverage (like gensim's
``evaluate_word_pairs`` with ``dummy4unknown=False``).

- :func:`evaluate_similarity`: Spearman (and Pearson) correlation between human scores and model similarities.
- :func:`evaluate_analogies`: 3CosAdd accuracy, ``argmax_d cos(d, b - a + c)`` over the vocabulary (a, b, c
  excluded), batched; :func:`evaluate_analogies_reference` is its slow twin, one question at a time.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from kexue.ops.sparse import pairwise_overlap

SimilarityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SimilarityScore:
    """Result of :func:`evaluate_similarity`.

    Attributes:
        spearman, pearson: correlations over the pairs found (nan if fewer than 2).
        n_pairs: pairs in the set; n_found: pairs with both words in the vocabulary.
    """

    spearman: float
    pearson: float
    n_pairs: int
    n_found: int

    @property
    def coverage(self) -> float:
        """Fraction of the set's pairs that were scored."""
        return self.n_found / self.n_pairs if self.n_pairs else 0.0


def cosine_similarity_fn(vectors: torch.Tensor) -> SimilarityFn:
    """Similarity of rows ``i`` and ``j`` of dense ``vectors [V, d]`` by cosine."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=1)
    return lambda i, j: (unit[i] * unit[j]).sum(-1)


def overlap_similarity_fn(codes: torch.Tensor) -> SimilarityFn:
    """Similarity of rows ``i`` and ``j`` of bool k-hot ``codes [V, K]`` by the number of shared ones.

    For codes with the same k, Jaccard o / (2k - o) and Hamming 2(k - o) are monotone in the overlap o, so the
    Spearman correlation is the same for all three.
    """
    return lambda i, j: (codes[i] & codes[j]).sum(-1).double()


def _found(words: Sequence[str], index: Mapping[str, int], lowercase: bool) -> list[int] | None:
    ids = [index.get(w.lower() if lowercase else w) for w in words]
    return None if any(i is None for i in ids) else ids


def evaluate_similarity(pairs: Sequence[tuple[str, str, float]], index: Mapping[str, int],
                        similarity: SimilarityFn, *, lowercase: bool = True) -> SimilarityScore:
    """Correlation of model similarity with human scores on a word-pair set (WordSim-353, SimLex-999, ...).

    Args:
        pairs: ``(word1, word2, human score)`` triples.
        index: word -> row of the embedding; pairs with a word not in it are skipped and counted.
        similarity: ``f(rows_i [n], rows_j [n]) -> [n]`` (:func:`cosine_similarity_fn`, :func:`overlap_similarity_fn`).
        lowercase: look words up in lower case.

    Returns:
        :class:`SimilarityScore` (Spearman's rho with average ranks for ties, as in scipy).
    """
    if not pairs:
        raise ValueError("pairs is empty: nothing to evaluate")
    rows, human = [], []
    for i, pair in enumerate(pairs):
        if len(pair) != 3:
            raise ValueError(f"pairs[{i}] must be (word1, word2, score), got {pair!r}")
        ids = _found(pair[:2], index, lowercase)
        if ids is not None:
            rows.append(ids)
            human.append(float(pair[2]))
    if len(rows) < 2:
        return SimilarityScore(float("nan"), float("nan"), len(pairs), len(rows))
    ids = torch.tensor(rows, dtype=torch.long)
    model = similarity(ids[:, 0], ids[:, 1]).double().cpu().numpy()
    human_arr = np.asarray(human)
    if np.ptp(model) == 0 or np.ptp(human_arr) == 0:  # a constant side has no correlation
        return SimilarityScore(float("nan"), float("nan"), len(pairs), len(rows))
    return SimilarityScore(float(stats.spearmanr(human_arr, model).statistic),
                           float(stats.pearsonr(human_arr, model).statistic), len(pairs), len(rows))


@dataclass
class AnalogyScore:
    """Result of :func:`evaluate_analogies`: accuracy over the questions found; counts."""

    accuracy: float
    n_questions: int
    n_found: int
    n_correct: int

    @property
    def coverage(self) -> float:
        return self.n_found / self.n_questions if self.n_questions else 0.0


def _analogy_rows(questions: Sequence[Sequence[str]], index: Mapping[str, int], lowercase: bool) -> torch.Tensor:
    rows = []
    for i, q in enumerate(questions):
        if len(q) not in (4, 5):
            raise ValueError(f"questions[{i}] must be (a, b, c, d) or (section, a, b, c, d), got {q!r}")
        ids = _found(q[-4:], index, lowercase)
        if ids is not None:
            rows.append(ids)
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)


def evaluate_analogies(questions: Sequence[Sequence[str]], index: Mapping[str, int], vectors: torch.Tensor, *,
                       lowercase: bool = True, batch_size: int = 1024) -> AnalogyScore:
    """3CosAdd analogy accuracy: a : b :: c : d is right when d = argmax_x cos(x, b - a + c), x not in {a, b, c}.

    Args:
        questions: ``(a, b, c, d)`` or ``(section, a, b, c, d)`` tuples (:func:`kexue.data.load_analogies`).
        index: word -> row of ``vectors``; questions with a missing word are skipped and counted.
        vectors: dense ``[V, d]`` (k-hot codes can be passed as floats).
        batch_size: questions scored per matmul.
    """
    rows = _analogy_rows(questions, index, lowercase)
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    correct = 0
    for lo in range(0, len(rows), batch_size):
        q = rows[lo: lo + batch_size]
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
        scores = torch.nn.functional.normalize(target, dim=1) @ unit.T
        scores.scatter_(1, q[:, :3], float("-inf"))  # the question words are not answers
        correct += int((scores.argmax(dim=1) == q[:, 3]).sum())
    n = len(rows)
    return AnalogyScore(correct / n if n else float("nan"), len(questions), n, correct)


def evaluate_analogies_reference(questions: Sequence[Sequence[str]], index: Mapping[str, int],
                                 vectors: torch.Tensor, *, lowercase: bool = True) -> AnalogyScore:
    """Slow twin of :func:`evaluate_analogies`: one question at a time, float64, a plain loop over candidates."""
    rows = _analogy_rows(questions, index, lowercase)
    unit = torch.nn.functional.normalize(vectors.double(), dim=1)
    correct = 0
    for a, b, c, d in rows.tolist():
        target = unit[b] - unit[a] + unit[c]
        target = target / target.norm()
        best, best_score = -1, -float("inf")
        for x in range(len(unit)):
            if x in (a, b, c):
                continue
            score = float(unit[x] @ target)
            if score > best_score:
                best, best_score = x, score
        correct += int(best == d)
    n = len(rows)
    return AnalogyScore(correct / n if n else float("nan"), len(questions), n, correct)


def nearest_by_overlap(codes: torch.Tensor, query: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``codes [V, K]`` sharing most ones with each ``query [Q, K]``: ``(rows [Q, n], overlaps [Q, n])``.

    Ties go to the lower row (stable sort).
    """
    shared = pairwise_overlap(query, codes)
    order = torch.sort(shared, dim=1, descending=True, stable=True).indices[:, :n]
    return order, shared.gather(1, order)
