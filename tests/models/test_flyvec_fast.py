"""FlyVec's compiled CPU trainer (kexue.models.flyvec.fast) against the dense reference rule, step by step."""

import numpy as np
import pytest
import torch

from kexue.models.flyvec import FlyVec, Vocabulary, hebbian_step_reference, window_dense
from kexue.models.flyvec.fast import BatchWinners, LazyScaleTrainer, _first_argmax

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _corpus(seed, n_words=20, n_docs=40, window=5):
    """Short documents (1 to 11 tokens: many windows reach past a document edge), a few stop words, and a document
    that repeats one word (repeated rows inside one window)."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for n in torch.randint(1, 12, (n_docs,), generator=gen).tolist():
        ids = torch.randint(0, n_words + 3, (n,), generator=gen).tolist()
        docs.append([LETTERS[i] + "q" if i < n_words else "the" for i in ids])
    docs.append(["bq"] * 7)
    vocab = Vocabulary.build(docs, min_count=1, max_doc_fraction=1.0)
    return vocab, vocab.encode(docs, window)


def _problem(seed, k=6, dtype=torch.float64):
    vocab, data = _corpus(seed)
    v = len(vocab)
    gen = torch.Generator().manual_seed(seed + 100)
    table = torch.rand(2 * v + 1, k, generator=gen, dtype=dtype) - 0.3
    table[-1] = 0
    inv_p = torch.rand(v, generator=gen, dtype=dtype) * 5 + 0.5
    return vocab, data, table, torch.cat([inv_p, inv_p, torch.zeros(1, dtype=dtype)])


@pytest.mark.parametrize(("seed", "renorm_below"), [(0, 1e-20), (1, 1e-20), (2, 0.5)])
def test_fast_steps_equal_the_reference_rule(seed, renorm_below):
    """Winners, energies and W after every step match hebbian_step_reference (float64), on windows at document
    edges, with repeated words, through exact column scans and (renorm_below = 0.5) folded scales."""
    vocab, data, table, inv_p = _problem(seed)
    v, lr = len(vocab), 0.05
    reference = table[:-1].T.clone()
    trainer = LazyScaleTrainer(table, data.tokens, inv_p, data.window, renorm_below=renorm_below)
    gen = torch.Generator().manual_seed(seed)
    edge = (data.windows(data.centres) < 0).any(dim=1)
    assert edge.float().mean() > 0.3  # many windows are cut by a document edge (or hold a stop word)
    for step in range(40):
        centres = data.centres[torch.randint(0, len(data), (16,), generator=gen)]
        reference, winners, energy = hebbian_step_reference(reference, window_dense(data.windows(centres), v),
                                                            inv_p[:-1], lr)
        found = trainer.winners(centres.numpy())
        assert np.array_equal(found.winners, winners.numpy()), step
        np.testing.assert_allclose(trainer.energy(found), energy.numpy(), rtol=1e-10)
        if step % 2:  # as under torchrun: only (winner, scaled activation) known, the table read again
            found = BatchWinners(found.winners, found.scaled)
        trainer.update(centres.numpy(), found, lr)
        weights = table[:-1].numpy() * trainer.scale  # W^T = table * scale
        np.testing.assert_allclose(weights.T, reference.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(trainer.row_norms(), reference.norm(dim=1).numpy(), rtol=1e-9)
    counters = trainer.counters
    assert counters["steps"] == 40 and counters["scans"] > 0
    assert (counters["folds"] > 0) == (renorm_below == 0.5)
    trainer.fold()
    np.testing.assert_allclose(table[:-1].T.numpy(), reference.numpy(), rtol=1e-10, atol=1e-12)
    assert (table[-1] == 0).all() and (trainer.scale == 1).all()


def test_a_repeated_word_counts_once_per_occurrence():
    """One window whose context is one word four times: the step moves that entry by 4/p (the dense input holds 4)."""
    vocab = Vocabulary.build([["aq"] * 5 + ["bq"] * 5], min_count=1, max_doc_fraction=1.0)
    data = vocab.encode([["aq", "aq", "bq", "aq", "aq"]], 5)
    v = len(vocab)
    table = torch.full((2 * v + 1, 3), 0.1, dtype=torch.float64)
    table[:, 1] = 0.2  # cell 1 wins every window
    table[-1] = 0
    inv_p = torch.ones(2 * v + 1, dtype=torch.float64)
    inv_p[-1] = 0
    centre = data.centres[2:3]  # the window around "bq"
    dense = window_dense(data.windows(centre), v)
    assert dense[0, vocab.index["aq"]] == 4
    expected, _, _ = hebbian_step_reference(table[:-1].T.clone(), dense, inv_p[:-1], 0.1)
    trainer = LazyScaleTrainer(table, data.tokens, inv_p, 5)
    trainer.update(centre.numpy(), trainer.winners(centre.numpy()), 0.1)
    trainer.fold()
    torch.testing.assert_close(table[:-1].T, expected)


@pytest.mark.parametrize("k", [1, 5, 8, 13, 400])
def test_winner_search_is_torch_argmax_first_maximum_with_ties(k):
    # few distinct values: ties everywhere, the maximum at index 0, inside the lanes or in the tail past the last 8
    rng = np.random.default_rng(k)
    for _ in range(300):
        v = rng.integers(-3, 3, size=k).astype(np.float64) + (rng.random() < 0.5) * rng.random(k) * 1e-3
        assert _first_argmax(v) == int(torch.argmax(torch.from_numpy(v)))


def test_results_do_not_depend_on_the_number_of_threads():
    _, data, table, inv_p = _problem(3, k=16, dtype=torch.float32)
    out = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            t = table.clone()
            trainer = LazyScaleTrainer(t, data.tokens, inv_p, data.window)
            for lo in range(0, len(data), 32):
                centres = data.centres[lo : lo + 32].numpy()
                trainer.update(centres, trainer.winners(centres), 0.05)
            trainer.fold()
            out.append(t)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out[0], out[1])


def test_fit_trainers_agree_and_bad_trainer_is_refused():
    vocab, data = _corpus(4, n_docs=200)
    tables = {}
    for trainer in ("fast", "torch"):
        model = FlyVec(n_cells=16, window=5, min_count=1, init_std=0.3, seed=2)
        model.init_weights(vocab)
        model.fit(data, epochs=2, lr=0.1, batch_size=64, energy_every=1, show_progress=False, trainer=trainer)
        assert all(h["trainer"] == trainer for h in model.history)
        tables[trainer] = (model.table, model.energy_trace)
    torch.testing.assert_close(tables["fast"][0], tables["torch"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tables["fast"][1], tables["torch"][1], rtol=1e-4)
    with pytest.raises(ValueError, match="trainer must be"):
        model.fit(data, epochs=1, show_progress=False, trainer="numba")


def test_trainer_rejects_bad_input():
    _, data, table, inv_p = _problem(5)
    with pytest.raises(ValueError, match="window must be"):
        LazyScaleTrainer(table, data.tokens, inv_p, 4)
    with pytest.raises(ValueError, match="contiguous float32/float64 CPU"):
        LazyScaleTrainer(table.to(torch.float16), data.tokens, inv_p, 5)
    with pytest.raises(ValueError, match="renorm_below"):
        LazyScaleTrainer(table, data.tokens, inv_p, 5, renorm_below=2.0)
