"""FlyVec: binary word embeddings learned by a fruit-fly-inspired rule (post 8, kexue.fm/archives/8159).

Liang, Ryali, Hoover, Grinberg, Navlakha, Zaki, Krotov, "Can a Fruit Fly Learn Word Embeddings?" (ICLR 2021,
arXiv 2101.06887), with the update rule, defaults and inference of the official code (bhoov/flyvec). K "Kenyon
cells" (weight rows of W in R^(K x 2V)) learn from n-gram windows by winner-take-all Hebbian plasticity
(:mod:`~kexue.models.flyvec.rule`); a word's hash is the set of the k most active cells (k-winners-take-all):

- **static** hash of word w: top-k of ``W_hat[:, V + w]`` (the target-block column; rows of W L2-normalised);
- **dynamic** (contextual) hash of w in a context: top-k of ``W_hat [BoW(context); e_w]``. With an empty context
  it is the static hash.

Training runs on the CPU in compiled kernels (:mod:`~kexue.models.flyvec.fast`, numba) or in plain torch (the
slow twin, and the GPU path), the same rule either way, and scales out with ``torchrun``: when
``torch.distributed`` is initialised, every rank draws the same window order, takes its share of each mini-batch,
finds its windows' winners, and the ranks exchange each window's (winner, scaled activation) with an
``all_gather`` (two numbers per window, not a dense update matrix); every rank then applies the same step, so N
ranks compute the single-process update::

    # torchrun --nproc_per_node 4 train.py
    torch.distributed.init_process_group("gloo")
    model = FlyVec().fit(docs)          # docs: the same list of token lists on every rank
    if torch.distributed.get_rank() == 0:
        model.save("flyvec.safetensors")

Unknown words: :meth:`FlyVec.static_hash` refuses out-of-vocabulary words and stop words with
:class:`~kexue.models.flyvec.text.UnknownWordError`; context words that are not in the vocabulary are skipped,
exactly as in training. Evaluations skip pairs with unknown words and report the coverage.
"""

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kexue._fs import write_atomic
from kexue._progress import progress
from kexue._resources import advise_huge_pages
from kexue.errors import KexueError
from kexue.models.flyvec.rule import ColumnMax, DeltaStats, hebbian_step_, window_winners
from kexue.models.flyvec.text import STOP_WORDS, UNK_ID, EncodedCorpus, Vocabulary, window_indices
from kexue.ops.sparse import index_bits, jaccard, kwta, pairwise_overlap

FORMAT = "kexue.flyvec/1"


class FlyVec:
    """The FlyVec model: vocabulary, K x 2V synapses, training and hashes.

    Args:
        n_cells: K, the number of Kenyon cells (official default 400).
        window: positions per window, odd (official default 11: target plus 10 context words).
        vocab_size: vocabulary size V built by :meth:`fit` (``<UNK>`` and ``<NUM>`` included).
        min_count: minimum count of a vocabulary word.
        max_doc_fraction: words in more than this fraction of documents are dropped.
        stop_words: words that are skipped (id -1).
        init_std: W starts i.i.d. N(0, init_std^2) (the newer official script: 0.02).
        frequency_scaling: divide inputs by word frequency in the update (the paper's rule; off = plain BioHash).
        seed: seeds the initial weights and the window order.
        device: where W lives.

    Attributes:
        vocab: the :class:`Vocabulary` (None before :meth:`fit` or :meth:`init_weights`).
        table: ``[2V + 1, K]`` float32 weights, transposed, with a zero sentinel last row.
        history: one dict per epoch: ``epoch, lr, energy`` (mean per window over the batches where it was
            computed), ``windows, seconds, trainer``.
        timings: seconds the fast trainer spent in its winner and update kernels during the last :meth:`fit`.
        energy_trace: mean energy per window of every ``energy_every``-th mini-batch, in order.
    """

    def __init__(self, n_cells: int = 400, window: int = 11, *, vocab_size: int = 20_000, min_count: int = 5,
                 max_doc_fraction: float = 0.8, stop_words: Iterable[str] = STOP_WORDS, init_std: float = 0.02,
                 frequency_scaling: bool = True, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if not isinstance(n_cells, int) or n_cells < 1:
            raise ValueError(f"n_cells must be an int >= 1, got {n_cells!r}")
        if not isinstance(window, int) or window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd int >= 1, got {window!r}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.n_cells, self.window = n_cells, window
        self.vocab_size, self.min_count, self.max_doc_fraction = vocab_size, min_count, max_doc_fraction
        self.stop_words = frozenset(stop_words)
        self.init_std, self.frequency_scaling, self.seed = init_std, frequency_scaling, seed
        self.device = torch.device(device)
        self.vocab: Vocabulary | None = None
        self.table: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []
        self.energy_trace: list[float] = []
        self.timings: dict[str, float] = {}

    # --- set-up ---------------------------------------------------------------------------------------------------

    def init_weights(self, vocab: Vocabulary) -> "FlyVec":
        """Adopt ``vocab`` and draw W ~ N(0, init_std^2) (seeded by ``seed``); returns ``self``."""
        gen = torch.Generator().manual_seed(self.seed)
        n_rows = 2 * len(vocab)
        table = _new_table(n_rows + 1, self.n_cells, self.device)
        table[:n_rows] = torch.randn(n_rows, self.n_cells, generator=gen).mul_(self.init_std).to(self.device)
        self.vocab, self.table = vocab, table
        return self

    def build_vocab(self, corpus: Iterable[str | Sequence[str]]) -> Vocabulary:
        """The vocabulary of ``corpus`` with this model's settings (:meth:`Vocabulary.build`)."""
        return Vocabulary.build(corpus, vocab_size=self.vocab_size, min_count=self.min_count,
                                max_doc_fraction=self.max_doc_fraction, stop_words=self.stop_words)

    def encode(self, corpus: Iterable[str | Sequence[str]]) -> EncodedCorpus:
        """Encode ``corpus`` with this model's vocabulary and window."""
        self._need_vocab()
        return self.vocab.encode(corpus, self.window)

    def _need_vocab(self) -> None:
        if self.vocab is None or self.table is None:
            raise KexueError("this FlyVec has no vocabulary yet: call fit(corpus) or init_weights(vocab) first")

    @property
    def synapses(self) -> torch.Tensor:
        """W ``[K, 2V]`` (a view of the table: context block, then target block)."""
        self._need_vocab()
        return self.table[:-1].T

    # --- training -------------------------------------------------------------------------------------------------

    def inverse_frequencies(self, counts: torch.Tensor) -> torch.Tensor:
        """``[2V + 1]`` input scaling 1/p (p = count / total), the same in both blocks, 0 for the sentinel.

        Words that never occur get 0 (they never appear in a window either). The scale of p is irrelevant to the
        update (the step is max-normalised) but sets the scale of the energy.
        """
        counts = counts.to(torch.float64)
        if self.frequency_scaling:
            inv = torch.where(counts > 0, counts.sum() / counts.clamp_min(1), torch.zeros_like(counts))
        else:
            inv = torch.ones_like(counts)
        return torch.cat([inv, inv, inv.new_zeros(1)]).to(torch.float32).to(self.device)

    def fit(self, corpus: Iterable[str | Sequence[str]] | EncodedCorpus, *, epochs: int = 15, lr: float = 0.002,
            batch_size: int = 10_000, prec: float = 1e-30, energy_every: int = 10, show_progress: bool = True,
            callback: Callable[[dict[str, Any]], None] | None = None, trainer: str = "auto") -> "FlyVec":
        """Learn W from ``corpus`` (builds the vocabulary first if the model has none).

        Each epoch e reshuffles the windows and takes max-normalised steps of ``lr * (1 - e / epochs)`` on
        mini-batches of ``batch_size`` windows. Under ``torch.distributed``, ranks split every mini-batch, exchange
        each window's winner and scaled activation, and apply the same step (see the module docstring).

        Args:
            corpus: documents (raw text or token lists), or an :class:`EncodedCorpus` from :meth:`encode`.
            epochs: passes over the windows (official default 15).
            lr: initial learning rate (newer official script 0.002; the older one 0.0002).
            batch_size: windows per mini-batch (official default 10,000), summed over ranks.
            prec: floor of the step normaliser.
            energy_every: compute the energy on every this many mini-batches (the torch trainer needs all row norms
                of W for it, a full pass over the weights; the fast trainer keeps them up to date).
            show_progress: show a progress bar (windows/s, energy) on rank 0.
            callback: called after every mini-batch with ``{epoch, batch, lr, energy, windows}`` (``energy`` is the
                mean energy per window of that batch, or None on batches where it was not computed).
            trainer: ``"fast"`` (:mod:`~kexue.models.flyvec.fast`: compiled CPU kernels), ``"torch"`` (the torch
                functions of :mod:`~kexue.models.flyvec.rule`; also the GPU path) or ``"auto"`` (fast on the CPU).
                Both take the same steps (up to round-off).

        Returns:
            ``self``.

        Raises:
            ValueError: empty corpus, bad arguments, or an encoded corpus that does not match the model.
        """
        if epochs < 1 or batch_size < 1 or energy_every < 1 or lr <= 0:
            raise ValueError(f"epochs, batch_size and energy_every must be >= 1 and lr > 0, got {epochs}, "
                             f"{batch_size}, {energy_every}, {lr}")
        if isinstance(corpus, EncodedCorpus):
            data = corpus
            self._need_vocab()
            if data.vocab_size != len(self.vocab) or data.window != self.window:
                raise ValueError(f"the encoded corpus has V={data.vocab_size}, window={data.window}; the model "
                                 f"has V={len(self.vocab)}, window={self.window}")
        else:
            if not isinstance(corpus, Sequence):
                corpus = list(corpus)  # read twice: vocabulary, then encoding
            if self.vocab is None:
                self.init_weights(self.build_vocab(corpus))
            data = self.encode(corpus)
        fast = self._use_fast(trainer)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        order_seed = torch.tensor([self.seed + 1])
        if distributed:  # identical start and window order on every rank, even if their seeds differ
            dist.broadcast(self.table, src=0)
            dist.broadcast(order_seed, src=0)

        table, vocab_size = self.table, len(self.vocab)
        inv_p = self.inverse_frequencies(data.counts)
        tokens, all_centres = data.tokens.to(self.device), data.centres.to(self.device)
        if fast:
            from kexue.models.flyvec.fast import BatchWinners, LazyScaleTrainer  # numba: imported on first use

            engine = LazyScaleTrainer(table, tokens, inv_p, self.window)
            centres_np = all_centres.numpy()
        else:
            buffer, colmax = torch.zeros_like(table), ColumnMax()  # scratch of the fused step (kept all zero)
            offsets = torch.arange(-(self.window // 2), self.window // 2 + 1, device=self.device)
        gen = torch.Generator().manual_seed(int(order_seed))
        n = len(data)
        bar = progress(total=epochs * n, desc="flyvec", unit="win") if rank == 0 and show_progress else None
        try:
            for epoch in range(epochs):
                lr_e = lr * (1 - epoch / epochs)
                order = torch.randperm(n, generator=gen)  # same order on every rank
                energy_sum, energy_n, start = 0.0, 0, time.perf_counter()
                for b, lo in enumerate(range(0, n, batch_size)):
                    batch = order[lo : lo + batch_size]
                    n_batch, with_energy = len(batch), b % energy_every == 0
                    if fast:
                        centres = centres_np[batch.numpy()]
                        found = engine.winners(centres[rank::world])
                        if distributed:  # exchange (winner, scaled activation) per window: no dense D
                            winners, scaled = _gather_windows(torch.from_numpy(found.winners),
                                                              torch.from_numpy(found.scaled), n_batch, world)
                            found = BatchWinners(winners.numpy(), scaled.numpy())
                        terms = torch.from_numpy(engine.energy(found)) if with_energy else None
                        engine.update(centres, found, lr_e, prec)
                    else:
                        idx = window_indices(tokens[all_centres[batch.to(self.device)].unsqueeze(1) + offsets],
                                             vocab_size)
                        stats = None
                        if distributed:
                            local = window_winners(table, idx[rank::world], inv_p)
                            stats = DeltaStats(*_gather_windows(local.winners, local.scaled, n_batch, world))
                        stats, terms = hebbian_step_(table, idx, inv_p, lr_e, buffer, colmax, prec, with_energy,
                                                     stats)
                    mean_energy = None
                    if with_energy:
                        batch_energy = terms.sum().double().item()  # every rank holds the whole batch's terms
                        mean_energy = batch_energy / n_batch
                        energy_sum, energy_n = energy_sum + batch_energy, energy_n + n_batch
                        self.energy_trace.append(mean_energy)
                    if bar is not None:
                        bar.update(n_batch)
                        if mean_energy is not None:
                            bar.set_postfix(epoch=epoch, energy=f"{mean_energy:.4g}")
                    if callback is not None:
                        callback({"epoch": epoch, "batch": b, "lr": lr_e, "energy": mean_energy, "windows": n_batch})
                if fast:
                    engine.fold()  # the table holds W itself between epochs
                self.history.append({"epoch": epoch, "lr": lr_e, "energy": energy_sum / energy_n, "windows": n,
                                     "seconds": time.perf_counter() - start, "trainer": "fast" if fast else "torch"})
        finally:
            if fast:
                engine.fold()
                self.timings = {"winners": engine.timings.winners, "update": engine.timings.update}
            if bar is not None:
                bar.close()
        return self

    # --- hashes ---------------------------------------------------------------------------------------------------

    def _use_fast(self, trainer: str) -> bool:
        if trainer not in ("auto", "fast", "torch"):
            raise ValueError(f"trainer must be 'auto', 'fast' or 'torch', got {trainer!r}")
        cpu = self.device.type == "cpu" and self.table.dtype in (torch.float32, torch.float64)
        if trainer == "fast" and not cpu:
            raise ValueError(f"trainer='fast' runs on the CPU; this model's weights are on {self.device}")
        return trainer == "fast" or (trainer == "auto" and cpu)

    def _row_norms(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.table, dim=0).clamp_min(1e-30)  # [K]: |W_mu|

    def word_ids(self, words: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Ids of ``words`` (a tensor of ids passes through, checked); unknown words raise ``UnknownWordError``."""
        self._need_vocab()
        if isinstance(words, torch.Tensor):
            if words.dtype != torch.long or ((words < 0) | (words >= len(self.vocab))).any():
                raise ValueError(f"word ids must be int64 in [0, {len(self.vocab)}), got {words}")
            return words
        if isinstance(words, str):
            raise TypeError("words must be a sequence of words, not one str (use [word])")
        return self.vocab.ids(words, unknown="error")

    def static_scores(self, words: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Activations of the context-free input ``[0; e_w]`` with normalised W rows: ``[n, K]``."""
        ids = self.word_ids(words).to(self.device)
        return self.table[len(self.vocab) + ids] / self._row_norms()

    def static_hash(self, words: Sequence[str] | torch.Tensor, k: int = 50) -> torch.Tensor:
        """Static hashes: bool ``[n, K]`` with exactly ``k`` ones each (official default k = 50)."""
        return kwta(self.static_scores(words), k)

    def static_codes(self, k: int = 50) -> torch.Tensor:
        """Static hashes of the whole vocabulary: bool ``[V, K]`` (row i = word id i)."""
        self._need_vocab()
        return self.static_hash(torch.arange(len(self.vocab)), k)

    def context_scores(self, targets: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """Activations of ``[BoW(context); e_target]`` with normalised W rows.

        Args:
            targets: int64 ``[B]`` word ids.
            contexts: int64 ``[B, C]`` word ids, ``STOP`` (-1) for empty slots (C may be 0).

        Returns:
            ``[B, K]``.
        """
        self._need_vocab()
        v = len(self.vocab)
        ctx = contexts.masked_fill(contexts < 0, 2 * v)
        idx = torch.cat([ctx, (targets + v).unsqueeze(1)], dim=1).to(self.device)
        return F.embedding_bag(idx, self.table, mode="sum") / self._row_norms()

    def dynamic_hash(self, target: str, context: Sequence[str] | str, k: int = 50) -> torch.Tensor:
        """Contextual hash of ``target`` among ``context`` words: bool ``[K]`` with ``k`` ones.

        Context words out of the vocabulary or in the stop list are skipped (as in training); an empty context
        gives the static hash. The target must be in the vocabulary.
        """
        context = context.split() if isinstance(context, str) else list(context)
        target_id = self.word_ids([target])
        ctx = self.vocab.ids(context, unknown="skip").reshape(1, -1)
        return kwta(self.context_scores(target_id, ctx), k)[0]

    def window_hash(self, sentence: Sequence[str] | str, position: int, k: int = 50) -> torch.Tensor:
        """Contextual hash of the word at ``position`` of ``sentence`` with the training window around it."""
        tokens = sentence.split() if isinstance(sentence, str) else list(sentence)
        if not 0 <= position < len(tokens):
            raise ValueError(f"position must be in [0, {len(tokens)}), got {position}")
        half = self.window // 2
        context = tokens[max(0, position - half): position] + tokens[position + 1: position + 1 + half]
        return self.dynamic_hash(tokens[position], context, k)

    # --- similarity -----------------------------------------------------------------------------------------------

    def similarity(self, a: str, b: str, k: int = 50) -> float:
        """Jaccard similarity of the static hashes of ``a`` and ``b``."""
        codes = self.static_hash([a, b], k)
        return float(jaccard(codes[0], codes[1]))

    def neighbours(self, word: str, n: int = 10, k: int = 50) -> list[tuple[str, int]]:
        """The ``n`` words whose static hashes share most cells with ``word``'s: ``[(word, overlap)]``.

        Ties are broken by word id (more frequent first); ``word`` itself, ``<UNK>`` and words never seen in the
        corpus the vocabulary was built from are ranked last.
        """
        self._need_vocab()
        target = self.word_ids([word])
        codes = self.static_codes(k)
        shared = pairwise_overlap(codes[target], codes)[0]
        shared[target] = -1
        shared[torch.from_numpy(self.vocab.counts == 0).to(shared.device)] = -1  # never trained: no meaning
        shared[UNK_ID] = -1
        order = torch.sort(shared, descending=True, stable=True).indices[:n]
        return [(self.vocab.words[i], int(shared[i])) for i in order.tolist()]

    # --- persistence ----------------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"n_cells": self.n_cells, "window": self.window, "vocab_size": self.vocab_size,
                "min_count": self.min_count, "max_doc_fraction": self.max_doc_fraction,
                "init_std": self.init_std, "frequency_scaling": self.frequency_scaling, "seed": self.seed}

    def save(self, path: str | Path) -> Path:
        """Write the model to a safetensors file atomically (temp file + rename): synapses, counts, vocabulary."""
        self._need_vocab()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "config": json.dumps(self.config()),
                "words": json.dumps(self.vocab.words), "stop_words": json.dumps(sorted(self.vocab.stop_words)),
                "history": json.dumps(self.history)}
        tensors = {"synapses": self.synapses.detach().cpu().contiguous(),
                   "counts": torch.from_numpy(self.vocab.counts.copy())}
        return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "FlyVec":
        """Read a model written by :meth:`save` (no pickle: safetensors plus JSON metadata).

        Raises:
            KexueError: missing, truncated or foreign file, or inconsistent shapes.
        """
        path = Path(path)
        if not path.is_file():
            raise KexueError(f"FlyVec file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise KexueError(f"FlyVec file {path} is corrupt or not a safetensors file ({err})") from None
        if meta.get("format") != FORMAT:
            raise KexueError(f"{path} is not a FlyVec model (format {meta.get('format')!r}, expected {FORMAT!r})")
        config = json.loads(meta["config"])
        model = cls(**config, stop_words=json.loads(meta["stop_words"]), device=device)
        vocab = Vocabulary(json.loads(meta["words"]), tensors["counts"].numpy(), model.stop_words)
        synapses = tensors["synapses"]
        if synapses.shape != (model.n_cells, 2 * len(vocab)):
            raise KexueError(f"{path}: synapses have shape {tuple(synapses.shape)}, expected "
                             f"({model.n_cells}, {2 * len(vocab)}) for K={model.n_cells}, V={len(vocab)}")
        table = _new_table(2 * len(vocab) + 1, model.n_cells, model.device)
        table[:-1] = synapses.T.to(model.device)
        model.vocab, model.table = vocab, table
        model.history = json.loads(meta.get("history", "[]"))
        return model


def _new_table(rows: int, n_cells: int, device: torch.device) -> torch.Tensor:
    """A zero ``[rows, n_cells]`` float32 table; on the CPU backed by huge pages where Linux allows (training gathers
    random rows of it: with 4 KiB pages most of those also miss the TLB)."""
    table = torch.empty(rows, n_cells, device=device)
    advise_huge_pages(table)  # before the first write, so that the pages are huge from the start
    return table.zero_()


def _gather_windows(winners: torch.Tensor, scaled: torch.Tensor, n_batch: int, world: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' (winner, scaled activation) of a batch of ``n_batch`` windows, in batch order (rank r held windows
    r, r + world, ...): an ``all_gather`` of two numbers per window instead of an all-reduce of a dense D."""
    share = -(-n_batch // world)  # all_gather needs equal sizes: pad every share to the largest
    pad = share - len(winners)
    parts = [torch.cat([winners.to(torch.float64), scaled.to(torch.float64)]).new_zeros(2 * share)
             for _ in range(world)]
    mine = torch.cat([F.pad(winners.to(torch.float64), (0, pad)),
                      F.pad(scaled.to(torch.float64), (0, pad))])
    dist.all_gather(parts, mine.to(parts[0].device))
    out_w = torch.empty(n_batch, dtype=winners.dtype, device=winners.device)
    out_s = torch.empty(n_batch, dtype=scaled.dtype, device=scaled.device)
    for r, part in enumerate(parts):
        count = len(range(r, n_batch, world))
        out_w[r::world] = part[:count].to(winners.dtype)
        out_s[r::world] = part[share : share + count].to(scaled.dtype)
    return out_w, out_s


def memory_bits(n_cells: int, k: int, dim: int = 300, float_bits: int = 32) -> dict[str, int]:
    """Bits per word: a k-hot code as k indices, as a K-bit mask, and a dense float vector of ``dim``."""
    return {"indices": index_bits(n_cells, k), "bitmask": n_cells, "dense": dim * float_bits}


def codes_to_numpy(codes: torch.Tensor) -> np.ndarray:
    """Bool codes ``[n, K]`` packed to uint8 bit masks ``[n, ceil(K / 8)]`` (the K-bit storage)."""
    return np.packbits(codes.cpu().numpy(), axis=-1)

