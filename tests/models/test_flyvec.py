"""FlyVec: tokenisation, windows, the learning rule against its dense twin, hashes, training claims, persistence."""

import sys

import pytest
import torch
import torch.nn.functional as F

from kexue.errors import KexueError
from kexue.models.flyvec import (
    NUM,
    STOP,
    UNK,
    ColumnMax,
    FlyVec,
    UnknownWordError,
    Vocabulary,
    apply_delta,
    baselines,
    energy_terms,
    hebbian_delta,
    hebbian_step_,
    hebbian_step_reference,
    memory_bits,
    normalize_token,
    tokenize,
    window_dense,
    window_indices,
)
from kexue.ops.sparse import pairwise_overlap

LETTERS = "abcdefghij"


def topic_corpus(n_topics=4, words_per_topic=10, n_docs=240, doc_len=30, seed=0):
    """Documents drawn from disjoint topics: topic t's words are ``<t><i>z`` (letters only, so no <NUM>)."""
    gen = torch.Generator().manual_seed(seed)
    docs = []
    for d in range(n_docs):
        t = d % n_topics
        ids = torch.randint(0, words_per_topic, (doc_len,), generator=gen).tolist()
        docs.append([f"{LETTERS[t]}{LETTERS[i]}z" for i in ids])
    return docs


def topic_separation(model, k):
    """Mean overlap of static hashes for same-topic pairs minus cross-topic pairs."""
    words = model.vocab.words[2:]
    topic = torch.tensor([LETTERS.index(w[0]) for w in words])
    codes = model.static_hash(words, k)
    shared = pairwise_overlap(codes, codes).float()
    same = topic[:, None] == topic[None, :]
    off_diagonal = ~torch.eye(len(words), dtype=torch.bool)
    return shared[same & off_diagonal].mean().item() - shared[~same].mean().item()


@pytest.fixture(scope="module")
def trained():
    # init_std = 0.45 gives rows of norm ~4 > 1, as the official 0.02 does at V = 20k: winners shrink towards
    # norm 1 and lose to fresh cells, so every cell ends up used.
    model = FlyVec(n_cells=40, window=5, min_count=1, init_std=0.45, seed=1)
    return model.fit(topic_corpus(n_docs=120), epochs=8, lr=0.3, batch_size=100, energy_every=1, show_progress=False)


# --- tokenisation and vocabulary -------------------------------------------------------------------------------------


def test_tokenize_lowercases_and_maps_numbers():
    assert tokenize("The 3 Bears' den, 1999-2001!") == ["the", NUM, "bears", "den", NUM, NUM]
    assert normalize_token("B52") == NUM and normalize_token("Apple") == "apple" and normalize_token(UNK) == UNK


def test_vocabulary_build_order_filters_and_specials():
    docs = [["apple", "apple", "banana", "the"], ["apple", "cherry", "banana", "12"], ["banana", "date"]]
    vocab = Vocabulary.build(docs, vocab_size=10, min_count=2, max_doc_fraction=1.0)
    assert vocab.words == [UNK, NUM, "apple", "banana"]  # ties broken by word; "the" is a stop word
    assert vocab.counts.tolist() == [2, 1, 3, 3]  # <UNK> counts cherry and date
    assert len(Vocabulary.build(docs, vocab_size=3, min_count=1, max_doc_fraction=1.0)) == 3
    # banana is in every document: dropped by max_doc_fraction < 1
    assert "banana" not in Vocabulary.build(docs, vocab_size=10, min_count=1, max_doc_fraction=0.9)


def test_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.build([[], []])
    with pytest.raises(ValueError, match="empty"):
        FlyVec(n_cells=4, window=3).fit([])
    vocab = Vocabulary.build([["apple"] * 5], max_doc_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        vocab.encode([["zebra", "the"]], window=3)


def test_unknown_word_policies():
    vocab = Vocabulary.build([["apple"] * 5 + ["pear"] * 5], max_doc_fraction=1.0)
    with pytest.raises(UnknownWordError, match="not in the vocabulary"):
        vocab.id("zebra")
    with pytest.raises(UnknownWordError, match="stop word"):
        vocab.id("the")
    assert vocab.ids(["apple", "zebra", "the"], unknown="unk").tolist() == [vocab.index["apple"], 0, STOP]
    assert vocab.ids(["apple", "zebra", "the"], unknown="skip").tolist() == [vocab.index["apple"], STOP, STOP]
    assert vocab.id("APPLE") == vocab.index["apple"]


# --- windows --------------------------------------------------------------------------------------------------------


def test_windows_never_cross_documents_and_match_a_naive_slice():
    docs = [["aaz", "abz", "the", "acz"], ["baz"], ["caz", "cbz", "ccz", "cdz", "cez", "cfz"]]
    vocab = Vocabulary.build(docs, min_count=1, max_doc_fraction=1.0)
    window = 5
    data = vocab.encode(docs, window)
    windows = data.windows(data.centres)
    expected = []
    for doc in docs:
        ids = [vocab._lookup(w) for w in doc]
        for i, centre in enumerate(ids):
            if centre < 0:
                continue  # stop words are never centres
            expected.append([ids[j] if 0 <= j < len(ids) else STOP for j in range(i - 2, i + 3)])
    assert windows.tolist() == expected
    first_letter = {vocab.index[w]: w[0] for doc in docs for w in doc if w in vocab}
    for row in windows.tolist():
        assert len({first_letter[i] for i in row if i >= 0}) == 1  # one document per window
    assert data.counts.sum() == len(data) == 10


def test_window_indices_and_embedding_bag_match_dense_inputs():
    gen = torch.Generator().manual_seed(0)
    v, k = 7, 5
    words = torch.randint(-1, v, (20, 5), generator=gen)
    words[:, 2] = words[:, 2].clamp_min(0)
    idx = window_indices(words, v)
    assert (idx[:, 2] >= v).all() and (idx[words < 0] == 2 * v).all()
    dense = window_dense(words, v)
    table = torch.randn(2 * v + 1, k, generator=gen, dtype=torch.float64)
    table[-1] = 0
    torch.testing.assert_close(F.embedding_bag(idx, table, mode="sum"), dense @ table[:-1])


# --- the learning rule ----------------------------------------------------------------------------------------------


def _tiny_problem(seed=0, v=6, k=4, b=32, w=5):
    gen = torch.Generator().manual_seed(seed)
    words = torch.randint(-1, v, (b, w), generator=gen)
    words[:, w // 2] = torch.randint(0, v, (b,), generator=gen)
    words[0, 0] = words[0, 1] = 3  # a repeated context word counts twice
    table = torch.randn(2 * v + 1, k, generator=gen, dtype=torch.float64)
    table[-1] = 0
    inv_p = torch.rand(v, generator=gen, dtype=torch.float64) * 5 + 0.5
    inv_p = torch.cat([inv_p, inv_p, torch.zeros(1, dtype=torch.float64)])
    return words, table, inv_p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_update_equals_dense_reference(seed):
    words, table, inv_p = _tiny_problem(seed)
    v = (len(table) - 1) // 2
    lr = 0.03
    new_ref, winners_ref, energy_ref = hebbian_step_reference(table[:-1].T.clone(), window_dense(words, v),
                                                              inv_p[:-1], lr)
    idx = window_indices(words, v)
    delta = torch.empty_like(table)
    stats = hebbian_delta(table, idx, inv_p, delta)
    torch.testing.assert_close(energy_terms(table, stats), energy_ref)
    apply_delta(table, delta, lr)
    assert torch.equal(stats.winners, winners_ref)
    torch.testing.assert_close(table[:-1].T, new_ref)
    assert (table[-1] == 0).all()  # the sentinel row never learns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_step_equals_the_dense_delta_step_over_many_steps(seed):
    """hebbian_step_ (no dense D) takes the same steps as hebbian_delta + apply_delta, on both of its branches."""
    gen = torch.Generator().manual_seed(seed)
    v, k, w = 30, 6, 5
    table = torch.rand(2 * v + 1, k, generator=gen, dtype=torch.float64)
    table[-1] = 0
    inv_p = torch.rand(v, generator=gen, dtype=torch.float64) * 5 + 0.5
    inv_p = torch.cat([inv_p, inv_p, torch.zeros(1, dtype=torch.float64)])
    dense, fused = table.clone(), table.clone()
    delta, scratch, colmax = torch.empty_like(table), torch.zeros_like(table), ColumnMax()
    for step in range(40):
        words = torch.randint(-1, v, (16, w), generator=gen)
        words[:, w // 2] = torch.randint(0, v, (16,), generator=gen)
        idx = window_indices(words, v)
        ref = hebbian_delta(dense, idx, inv_p, delta)
        ref_energy = energy_terms(dense, ref)
        apply_delta(dense, delta, 0.05)
        stats, energy = hebbian_step_(fused, idx, inv_p, 0.05, scratch, colmax, energy=True)
        assert torch.equal(stats.winners, ref.winners), step
        torch.testing.assert_close(energy, ref_energy)
        torch.testing.assert_close(fused, dense)
        assert (scratch == 0).all()  # left as found
        bound = torch.maximum(*(t.abs() for t in torch.aminmax(fused, dim=0)))
        assert (colmax.bound >= bound - 1e-12).all()  # the carried bound stays an upper bound
    assert colmax.steps == 40 and 0 < colmax.fallbacks < 40  # both branches ran
    assert (fused[-1] == 0).all()


def test_update_is_invariant_to_the_scale_of_p():
    words, table, inv_p = _tiny_problem(3)
    idx = window_indices(words, (len(table) - 1) // 2)
    out = []
    for scale in (1.0, 1e4):
        t, delta = table.clone(), torch.empty_like(table)
        hebbian_delta(t, idx, inv_p * scale, delta)
        apply_delta(t, delta, 0.01)
        out.append(t)
    torch.testing.assert_close(out[0], out[1])


def test_split_batch_deltas_sum_to_the_full_delta():
    """What the all-reduce under torchrun relies on: D is a sum over windows."""
    words, table, inv_p = _tiny_problem(4)
    idx = window_indices(words, (len(table) - 1) // 2)
    full, a, b = (torch.empty_like(table) for _ in range(3))
    hebbian_delta(table, idx, inv_p, full)
    hebbian_delta(table, idx[0::2], inv_p, a)
    hebbian_delta(table, idx[1::2], inv_p, b)
    torch.testing.assert_close(a + b, full)


# --- hashes ---------------------------------------------------------------------------------------------------------


def test_every_hash_has_exactly_k_ones(trained):
    for k in (1, 5, 40):
        assert (trained.static_codes(k).sum(-1) == k).all()
    assert trained.dynamic_hash("abz", ["acz", "adz"], k=7).sum() == 7
    assert trained.window_hash("aaz the abz acz bbz", 2, k=3).sum() == 3
    with pytest.raises(ValueError, match="k must be an int in"):
        trained.static_hash(["abz"], k=41)


def test_static_hash_depends_only_on_the_target_block(trained):
    model = FlyVec(n_cells=40, window=5, min_count=1, seed=1)
    model.init_weights(trained.vocab)
    model.table = trained.table.clone()
    v = len(model.vocab)
    before = model.static_codes(5)
    # Scramble the context block by permuting its words: every W row keeps its norm (the hash normalises rows).
    model.table[:v] = model.table[torch.randperm(v)]
    assert torch.equal(model.static_codes(5), before)
    model.table[v + 5] = -model.table[v + 5]  # the target column of word 5 is what its hash reads
    assert not torch.equal(model.static_codes(5)[5], before[5])
    assert torch.equal(model.static_codes(5)[6:], before[6:])


def test_dynamic_hash_with_empty_context_is_the_static_hash(trained):
    for word in ("aaz", "bcz", "jjz" if "jjz" in trained.vocab else "ddz"):
        static = trained.static_hash([word], 6)[0]
        assert torch.equal(trained.dynamic_hash(word, [], 6), static)
        assert torch.equal(trained.dynamic_hash(word, ["the", "zebra"], 6), static)  # all skipped


def test_context_moves_the_dynamic_hash_towards_the_context_topic(trained):
    k = 8
    target_topic_b = trained.static_hash(["baz", "bbz", "bcz", "bdz"], k)
    static = trained.static_hash(["aaz"], k)
    dynamic = trained.dynamic_hash("aaz", ["baz", "bbz", "bcz", "bdz", "bez", "bfz"], k).unsqueeze(0)
    assert pairwise_overlap(dynamic, target_topic_b).float().mean() > pairwise_overlap(static, target_topic_b).float(
    ).mean() + 1


def test_unknown_words_are_refused_by_hashes(trained):
    with pytest.raises(UnknownWordError):
        trained.static_hash(["zebra"])
    with pytest.raises(UnknownWordError):
        trained.neighbours("the")
    with pytest.raises(TypeError, match="not one str"):
        trained.static_hash("abz")


# --- what training does ---------------------------------------------------------------------------------------------


def test_same_topic_words_share_more_cells_than_cross_topic_and_than_random_weights(trained):
    random_model = FlyVec(n_cells=40, window=5, min_count=1, init_std=0.45, seed=1).init_weights(trained.vocab)
    for k in (3, 5):
        learned, random = topic_separation(trained, k), topic_separation(random_model, k)
        # 40 cells, 4 topics: ~10 cells per topic, so a word's top-k are mostly its topic's cells
        assert learned > 0.25 * k
        assert abs(random) < 0.25
        assert learned > random + 0.25 * k
    nearest = [w for w, _ in trained.neighbours("abz", n=5, k=5)]
    assert all(w.startswith("a") for w in nearest)


def test_energy_decreases_on_average(trained):
    trace = torch.tensor(trained.energy_trace)
    quarter = len(trace) // 4
    assert trace[-quarter:].mean() < trace[:quarter].mean()
    assert trained.history[-1]["energy"] < trained.history[0]["energy"]


def test_winning_cells_approach_unit_norm(trained):
    norms = trained.synapses.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=0.05)


def test_fit_is_deterministic_and_logs_through_the_callback():
    docs = topic_corpus(n_docs=40)
    seen = []
    a = FlyVec(n_cells=8, window=3, min_count=1, seed=3).fit(docs, epochs=2, batch_size=64, show_progress=False,
                                                             callback=seen.append)
    b = FlyVec(n_cells=8, window=3, min_count=1, seed=3).fit(docs, epochs=2, batch_size=64, show_progress=False)
    assert torch.equal(a.table, b.table)
    assert {"epoch", "batch", "lr", "energy", "windows"} <= set(seen[0])
    assert sum(s["windows"] for s in seen) == 2 * len(a.encode(docs))
    assert seen[-1]["lr"] == pytest.approx(0.002 / 2)  # linear decay: lr (1 - e / epochs)


def test_fit_rejects_mismatched_encoded_corpus():
    docs = topic_corpus(n_docs=20)
    model = FlyVec(n_cells=8, window=3, min_count=1).fit(docs, epochs=1, show_progress=False)
    other = FlyVec(n_cells=8, window=5, min_count=1)
    other.init_weights(model.vocab)
    with pytest.raises(ValueError, match="window"):
        model.fit(other.encode(docs), epochs=1)


# --- persistence, memory, baselines ----------------------------------------------------------------------------------


def test_save_load_roundtrip(trained, tmp_path):
    path = trained.save(tmp_path / "fly.safetensors")
    loaded = FlyVec.load(path)
    assert torch.equal(loaded.table, trained.table)
    assert loaded.vocab.words == trained.vocab.words and loaded.window == trained.window
    assert torch.equal(loaded.static_codes(5), trained.static_codes(5))
    assert not list(tmp_path.glob(".*tmp*"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(KexueError, match="corrupt"):
        FlyVec.load(bad)
    with pytest.raises(KexueError, match="does not exist"):
        FlyVec.load(tmp_path / "missing.safetensors")


def test_memory_bits():
    assert memory_bits(400, 50, dim=300) == {"indices": 450, "bitmask": 400, "dense": 9600}


def test_baseline_codes_and_word2vec_corpus():
    vocab = Vocabulary.build([["apple"] * 5 + ["pear"] * 5], max_doc_fraction=1.0)
    assert baselines.word2vec_corpus([["Apple", "the", "kiwi", "7"]], vocab) == [["apple", "the", UNK, NUM]]
    x = torch.randn(30, 16)
    assert (baselines.flyhash_codes(x, 200, 10).sum(-1) == 10).all()
    assert baselines.simhash_codes(x, 64).shape == (30, 64)


def test_word2vec_needs_gensim_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)
    monkeypatch.setitem(sys.modules, "gensim.models", None)
    with pytest.raises(KexueError, match="pip install"):
        baselines.train_word2vec([["a", "b"]])


def test_word2vec_baseline_runs_on_the_same_tokens():
    pytest.importorskip("gensim")
    docs = topic_corpus(n_docs=60)
    wv = baselines.train_word2vec(docs, dim=16, epochs=2, min_count=1, workers=1)
    vectors, found = baselines.keyed_vectors_to_tensor(wv, ["aaz", "zebra"])
    assert found.tolist() == [True, False] and vectors.shape == (2, 16) and (vectors[1] == 0).all()


# --- scale-out ------------------------------------------------------------------------------------------------------

WORKER = """
import os

import torch

from kexue.models.flyvec import FlyVec


def _distributed_worker(rank, world, port, docs, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def no_all_reduce(*args, **kwargs):
        raise AssertionError("FlyVec.fit must exchange winners (all_gather), not all-reduce a dense update")

    dist.all_reduce = no_all_reduce
    try:
        torch.set_num_threads(1)
        for trainer in ("fast", "torch"):
            model = FlyVec(n_cells=8, window=3, min_count=1, seed=rank + 5)  # different seeds: rank 0's W is sent
            model.init_weights(model.build_vocab(docs))
            if rank == 0:
                torch.save(model.table.clone(), out + ".init")
            model.fit(docs, epochs=2, batch_size=51, lr=0.05, show_progress=False, trainer=trainer)
            if rank == 0:
                torch.save(model.table, f"{out}.{trainer}")
    finally:
        dist.destroy_process_group()


"""



@pytest.mark.slow
def test_torchrun_style_training_equals_single_process(tmp_path, monkeypatch):
    """Two gloo ranks splitting every mini-batch (odd size: unequal shares) and exchanging (winner, scaled activation)
    per window compute the single-process update: bit for bit with the fast trainer, up to summation order with the
    torch one. The workers forbid all_reduce: only the (small) all_gather of triples is used."""
    import importlib
    import socket

    import torch.multiprocessing as mp

    # spawn children import the worker by module name: put it in an importable file (tests/ is not a package)
    (tmp_path / "flyvec_dist_worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = importlib.import_module("flyvec_dist_worker")._distributed_worker
    docs = topic_corpus(n_docs=30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "table.pt")
    mp.spawn(worker, args=(2, port, docs, out), nprocs=2, join=True)
    for trainer in ("fast", "torch"):
        single = FlyVec(n_cells=8, window=3, min_count=1, seed=5)
        single.init_weights(single.build_vocab(docs))
        assert torch.equal(single.table, torch.load(out + ".init", weights_only=True))
        single.fit(docs, epochs=2, batch_size=51, lr=0.05, show_progress=False, trainer=trainer)
        ranks = torch.load(f"{out}.{trainer}", weights_only=True)
        if trainer == "fast":
            assert torch.equal(ranks, single.table)
        else:
            torch.testing.assert_close(ranks, single.table, rtol=1e-4, atol=1e-5)

