"""Process-safe data feeding, after Su's "safe generators" in "Making Keras cooler!" (kexue.fm/archives/6575).

Su's fix for generators that break under ``fit_generator(workers>1)`` is an index-addressable ``Sequence``. The
PyTorch counterparts and their classic failures (spec ``training-tools.md`` §7), each one a test:

- a map-style dataset with a sampler sees every index once per epoch, whatever ``num_workers`` is;
- an ``IterableDataset`` is **replicated in every worker** and under DDP in every rank; :class:`ShardedStream`
  splits it by (rank, worker) so that across all ranks and workers every item is seen exactly once per epoch;
- RNG *objects* held by a dataset (``np.random.default_rng(0)``) are copied identically into every worker;
  :func:`seed_worker` re-seeds them per (rank, worker);
- file handles, sockets and clients must not be shared across forked workers; :class:`LazyHandle` opens one per
  process on first use and is dropped when pickled.

:class:`ShardedStream` yields whole batches. Global batch ``b`` of an epoch goes to rank ``b % world_size``; a rank's
``j``-th batch goes to worker ``j % num_workers``. ``DataLoader`` collects batches from its workers round-robin, so
each rank receives its batches in order whatever ``num_workers`` is; that makes the stream resumable by counting
consumed batches (:class:`ResumableLoader`).
"""

import functools
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from kexue.errors import KexueError

# --- epoch order ----------------------------------------------------------------------------------------------------


def epoch_order(n: int, epoch: int, *, seed: int = 0, shuffle: bool = True) -> torch.Tensor:
    """The order of ``n`` items in ``epoch``: a permutation that depends only on ``(seed, epoch)``.

    Returns:
        int64 ``[n]``. Without ``shuffle``: ``arange(n)``.
    """
    if n < 0 or epoch < 0:
        raise KexueError(f"epoch_order: n and epoch must be non-negative, got n={n}, epoch={epoch}")
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=gen)


# --- the sharded stream --------------------------------------------------------------------------------------------


class ShardedStream(IterableDataset):
    """Batches of a data source, split by (rank, worker) so every item is seen once per epoch.

    Use with ``DataLoader(stream, batch_size=None, num_workers=W)`` (or :class:`ResumableLoader`).

    Args:
        source: a sequence (``len`` and integer ``__getitem__``, read by index) or a zero-argument callable that
            returns a fresh iterable (called inside each worker, so it may open files lazily; every worker reads
            the stream and keeps its own batches).
        batch_size: items per batch.
        rank, world_size: this process's place under DDP (default: a single process).
        shuffle: a new permutation per epoch from ``(seed, epoch)``; sequence sources only.
        seed: seed of the permutation.
        drop_last: drop the global tail so that every rank gets the same number of full batches (needed under DDP,
            where uneven batch counts hang the collectives); then items of the tail are not seen this epoch.
        collate: turns a list of items into a batch (default: torch's ``default_collate``).
    """

    def __init__(self, source: Sequence | Callable[[], Iterable], batch_size: int, *, rank: int = 0,
                 world_size: int = 1, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 collate: Callable[[list], Any] = default_collate) -> None:
        super().__init__()
        indexable = hasattr(source, "__len__") and hasattr(source, "__getitem__")
        if not indexable and not callable(source):
            raise KexueError("ShardedStream: source must be a sequence (len + getitem) or a callable returning an "
                             f"iterable, got {type(source).__name__}")
        if shuffle and not indexable:
            raise KexueError("ShardedStream: shuffle needs a sequence source (a stream has no random access)")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise KexueError(f"ShardedStream: batch_size must be a positive int, got {batch_size!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise KexueError(f"ShardedStream: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.source, self.indexable = source, indexable
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.shuffle, self.seed, self.drop_last, self.collate = shuffle, seed, drop_last, collate
        self.epoch = 0  # set by the consumer before iterating (ResumableLoader does it)
        self.start = 0  # the first rank-local batch to yield (resume point)

    def num_batches(self, n: int | None = None) -> int:
        """Batches this rank gets per epoch (sequence sources, or give the stream length ``n``)."""
        if n is None:
            if not self.indexable:
                raise KexueError("ShardedStream.num_batches: a stream source has no length; pass n")
            n = len(self.source)
        if self.drop_last:
            return (n // self.batch_size) // self.world_size
        total = -(-n // self.batch_size)
        return len(range(self.rank, total, self.world_size))

    def _mine(self, j: int, worker: int, workers: int) -> bool:
        """Does rank-local batch ``j`` belong to this worker (and is it at or after the resume point)?"""
        return j >= self.start and (j - self.start) % workers == worker

    def _global_batches(self) -> Iterator[tuple[int, list]]:
        """``(global batch index, list of items or indices)`` for the epoch, items fetched lazily by the caller."""
        if self.indexable:
            order = epoch_order(len(self.source), self.epoch, seed=self.seed, shuffle=self.shuffle).tolist()
            for b, lo in enumerate(range(0, len(order), self.batch_size)):
                yield b, order[lo:lo + self.batch_size]
        else:
            chunk: list = []
            b = 0
            for item in self.source():
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    yield b, chunk
                    chunk, b = [], b + 1
            if chunk:
                yield b, chunk

    def _rank_batches(self) -> Iterator[tuple[int, list]]:
        """``(rank-local index j, chunk)`` for this rank's batches of the epoch."""
        if not self.drop_last:
            for b, chunk in self._global_batches():
                if b % self.world_size == self.rank:
                    yield b // self.world_size, chunk
            return
        # drop_last: hand out only complete rounds of world_size full batches, so every rank gets as many
        round_: list[list] = []
        for b, chunk in self._global_batches():
            if len(chunk) < self.batch_size:
                return
            round_.append(chunk)
            if len(round_) == self.world_size:
                yield b // self.world_size, round_[self.rank]
                round_ = []

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for j, chunk in self._rank_batches():
            if self._mine(j, worker, workers):
                items = [self.source[i] for i in chunk] if self.indexable else chunk
                yield self.collate(items)


class ResumableLoader:
    """A ``DataLoader`` over a :class:`ShardedStream` that knows how far it got, for checkpoints.

    Iterating runs one epoch from the resume point; the position counts batches handed to the caller, so save it
    after the step that used the batch. Extra keyword arguments go to ``DataLoader`` (``batch_size`` is fixed to
    None: the stream makes the batches).
    """

    def __init__(self, stream: ShardedStream, **loader_kwargs: Any) -> None:
        if "batch_size" in loader_kwargs:
            raise KexueError("ResumableLoader: the stream makes the batches; do not pass batch_size")
        if loader_kwargs.get("persistent_workers"):
            raise KexueError("ResumableLoader: persistent_workers would keep a stale epoch/start in the workers")
        self.stream, self.loader_kwargs = stream, loader_kwargs
        self.epoch, self.batch = 0, 0

    def __iter__(self) -> Iterator[Any]:
        self.stream.epoch, self.stream.start = self.epoch, self.batch  # copied into the workers at iter()
        for batch in DataLoader(self.stream, batch_size=None, **self.loader_kwargs):
            self.batch += 1
            yield batch
        self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


# --- worker seeding ------------------------------------------------------------------------------------------------


def _reseed(obj: Any, seed: int) -> bool:
    """Re-seed an RNG object in place (or return False if ``obj`` is none)."""
    if isinstance(obj, random.Random):
        obj.seed(seed)
    elif isinstance(obj, np.random.RandomState):
        obj.seed(seed % 2**32)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = type(obj.bit_generator)(seed).state
    elif isinstance(obj, torch.Generator):
        obj.manual_seed(seed)
    else:
        return False
    return True


def reseed_rng_attributes(dataset: Any, seed: int, _depth: int = 0) -> list[str]:
    """Re-seed every RNG object held as an attribute of ``dataset`` (and of wrapped ``.dataset`` objects).

    Each attribute gets its own seed derived from ``seed`` and its name. Returns the names re-seeded.
    """
    names = []
    for name, value in sorted(vars(dataset).items()) if hasattr(dataset, "__dict__") else []:
        sub = int(np.random.SeedSequence([seed, _depth, *name.encode()]).generate_state(1, np.uint64)[0] >> 1)
        if _reseed(value, sub):
            names.append(name)
        elif name == "dataset" and _depth < 4:
            names += [f"dataset.{n}" for n in reseed_rng_attributes(value, seed, _depth + 1)]
    return names


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn``: distinct, reproducible seeds per (rank, worker) for every RNG a worker may use.

    torch seeds each worker with ``base_seed + worker_id`` and NumPy's global RNG from it, but under DDP the base
    seed is the same on every rank, and RNG objects held by the dataset are copied unchanged into every worker.
    This mixes the rank in and re-seeds Python's ``random``, NumPy's global RNG, torch, and the dataset's own RNG
    objects. Use ``worker_init_fn=functools.partial(seed_worker, rank=rank)`` (see :func:`worker_init`).
    """
    info = get_worker_info()
    if info is None:
        raise KexueError("seed_worker must run inside a DataLoader worker (pass it as worker_init_fn)")
    seed = int(np.random.SeedSequence([info.seed % 2**63, rank, worker_id]).generate_state(1, np.uint64)[0] >> 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    reseed_rng_attributes(info.dataset, seed)


def worker_init(rank: int = 0) -> Callable[[int], None]:
    """A picklable ``worker_init_fn`` for ``rank`` (works with the ``spawn`` and ``forkserver`` contexts too)."""
    return functools.partial(seed_worker, rank=rank)


# --- lazy per-process handles --------------------------------------------------------------------------------------


class LazyHandle:
    """A resource (file, DB connection, client) opened on first use in each process, never shared across a fork.

    ``handle.get()`` returns the open resource, opening it if this process has none yet; the open resource is
    dropped when the object is pickled (``spawn`` workers) and re-opened after a fork (the pid changed).

    Args:
        opener: a picklable callable that opens the resource, e.g. ``functools.partial(open, path, "rb")``.
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self.opener = opener
        self._handle: Any = None
        self._pid: int | None = None
        self.opened_in: list[int] = []  # pids that opened a handle (in this copy), for diagnostics and tests

    def get(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            # after a fork the inherited handle belongs to the parent (shared file offset): never close it here
            self._handle, self._pid = self.opener(), os.getpid()
            self.opened_in.append(self._pid)
        return self._handle

    def __getstate__(self) -> dict:
        return {"opener": self.opener, "_handle": None, "_pid": None, "opened_in": list(self.opened_in)}

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid() and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle, self._pid = None, None
