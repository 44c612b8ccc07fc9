"""Word-similarity and analogy evaluation (kexue.eval.words)."""

import math

import numpy as np
import pytest
import torch

from kexue.eval.words import (
    cosine_similarity_fn,
    evaluate_analogies,
    evaluate_analogies_reference,
    evaluate_similarity,
    nearest_by_overlap,
    overlap_similarity_fn,
)
from kexue.ops.sparse import kwta, pairwise_overlap


def _toy():
    words = [f"w{i}" for i in range(12)]
    index = {w: i for i, w in enumerate(words)}
    vectors = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    return words, index, vectors


def test_monotone_human_scores_give_rho_one_and_reversed_minus_one():
    words, index, vectors = _toy()
    fn = cosine_similarity_fn(vectors)
    pairs = [(words[i], words[j]) for i in range(6) for j in range(6, 12)]
    model = fn(torch.tensor([index[a] for a, _ in pairs]), torch.tensor([index[b] for _, b in pairs]))
    human = (3 * model + 1).tolist()  # any increasing map of the model's similarities
    score = evaluate_similarity([(a, b, h) for (a, b), h in zip(pairs, human, strict=True)], index, fn)
    assert score.spearman == pytest.approx(1.0) and score.pearson == pytest.approx(1.0)
    rev = evaluate_similarity([(a, b, -h ** 3) for (a, b), h in zip(pairs, human, strict=True)], index, fn)
    assert rev.spearman == pytest.approx(-1.0)


def test_unknown_words_are_skipped_and_counted_as_coverage():
    _, index, vectors = _toy()
    pairs = [("w0", "w1", 1.0), ("w2", "W3", 2.0), ("w4", "zebra", 3.0), ("w5", "w6", 0.5)]
    score = evaluate_similarity(pairs, index, cosine_similarity_fn(vectors))
    assert (score.n_pairs, score.n_found) == (4, 3) and score.coverage == pytest.approx(0.75)
    strict = evaluate_similarity(pairs, index, cosine_similarity_fn(vectors), lowercase=False)
    assert strict.n_found == 2
    few = evaluate_similarity([("w0", "zebra", 1.0)], index, cosine_similarity_fn(vectors))
    assert math.isnan(few.spearman) and few.n_found == 0
    with pytest.raises(ValueError, match="empty"):
        evaluate_similarity([], index, cosine_similarity_fn(vectors))


def test_matches_gensim_evaluate_word_pairs(tmp_path):
    gensim = pytest.importorskip("gensim")
    words, index, _ = _toy()
    vectors = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    kv = gensim.models.KeyedVectors(8)
    kv.add_vectors(words, vectors.numpy())
    rng = np.random.default_rng(0)
    pairs = [(words[i], words[j], float(rng.uniform(0, 10))) for i, j in rng.integers(0, 12, (40, 2)) if i != j]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))
    pearson, spearman, oov = kv.evaluate_word_pairs(str(path), delimiter="\t")
    ours = evaluate_similarity(pairs, index, cosine_similarity_fn(vectors))
    assert ours.spearman == pytest.approx(spearman.statistic, abs=1e-9)
    assert ours.pearson == pytest.approx(pearson.statistic, abs=1e-6)
    assert oov == 0 and ours.coverage == 1.0


def test_overlap_similarity_is_the_code_overlap():
    codes = kwta(torch.randn(10, 30), 6)
    fn = overlap_similarity_fn(codes)
    i, j = torch.arange(10), torch.arange(10).flip(0)
    full = pairwise_overlap(codes, codes)
    assert torch.equal(fn(i, j).long(), full[i, j])


def test_analogies_fast_equals_reference_and_solves_a_constructed_set():
    # Vectors built so that b - a + c = d exactly for the listed questions.
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(6, 20, generator=gen)
    offset = torch.randn(20, generator=gen) * 0.5
    vectors = torch.cat([base, base + offset, torch.randn(10, 20, generator=gen)])
    words = [f"x{i}" for i in range(len(vectors))]
    index = {w: i for i, w in enumerate(words)}
    questions = [("sec", f"x{a}", f"x{a + 6}", f"x{c}", f"x{c + 6}") for a in range(6) for c in range(6) if a != c]
    questions.append(("sec", "x0", "x6", "x1", "missing"))
    fast = evaluate_analogies(questions, index, vectors, batch_size=7)
    slow = evaluate_analogies_reference(questions, index, vectors)
    assert (fast.n_correct, fast.n_found) == (slow.n_correct, slow.n_found)
    assert fast.n_found == 30 and fast.n_questions == 31
    assert fast.accuracy > 0.9
    rand = torch.randn(16, 20, generator=gen)
    assert evaluate_analogies(questions, index, rand).n_correct == evaluate_analogies_reference(
        questions, index, rand).n_correct


def test_nearest_by_overlap_orders_and_breaks_ties_by_row():
    codes = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    rows, shared = nearest_by_overlap(codes, codes[:1], 3)
    assert rows.tolist() == [[0, 1, 2]] and shared.tolist() == [[2, 2, 1]]
