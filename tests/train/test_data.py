"""Process-safe data: each classic failure of spec §7 as a test, and the sharded stream's exactly-once guarantee.

Ranks are simulated (one loader per rank in this process); workers are real (``num_workers=2``).
"""

import collections
import functools
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from kexue.errors import KexueError
from kexue.train.data import LazyHandle, ResumableLoader, ShardedStream, epoch_order, worker_init

N = 23  # not a multiple of anything below, so the tails are uneven


class Squares(Dataset):
    def __len__(self):
        return N

    def __getitem__(self, i):
        return i


class NaiveStream(IterableDataset):
    def __iter__(self):
        return iter(range(N))


def flat(batches) -> list[int]:
    return [int(v) for b in batches for v in torch.as_tensor(b).flatten()]


def test_map_style_dataset_sees_every_index_once_with_workers():
    seen = flat(DataLoader(Squares(), batch_size=4, shuffle=True, num_workers=2))
    assert sorted(seen) == list(range(N))


def test_unsharded_iterable_is_replicated_in_every_worker():
    counts = collections.Counter(flat(DataLoader(NaiveStream(), batch_size=4, num_workers=2)))
    assert set(counts.values()) == {2}  # the pitfall: every item twice


@pytest.mark.parametrize("source", ["sequence", "stream"])
@pytest.mark.parametrize("workers", [0, 2])
def test_sharded_stream_sees_every_item_exactly_once_across_ranks_and_workers(source, workers):
    shuffle = source == "sequence"
    src = list(range(N)) if source == "sequence" else functools.partial(iter, range(N))
    per_rank = []
    for rank in range(2):
        stream = ShardedStream(src, 3, rank=rank, world_size=2, shuffle=shuffle, seed=5)
        per_rank.append(list(DataLoader(stream, batch_size=None, num_workers=workers)))
    seen = flat(per_rank[0]) + flat(per_rank[1])
    assert sorted(seen) == list(range(N))
    # the order a rank receives does not depend on num_workers
    single = ShardedStream(src, 3, rank=1, world_size=2, shuffle=shuffle, seed=5)
    assert flat(per_rank[1]) == flat(DataLoader(single, batch_size=None, num_workers=0))
    if shuffle:
        assert flat(per_rank[0]) != sorted(flat(per_rank[0]))


def test_drop_last_gives_every_rank_the_same_number_of_full_batches():
    for source in (list(range(N)), functools.partial(iter, range(N))):
        sizes, seen = [], []
        for rank in range(2):
            stream = ShardedStream(source, 4, rank=rank, world_size=2, drop_last=True)
            batches = list(DataLoader(stream, batch_size=None, num_workers=2))
            sizes.append([len(b) for b in batches])
            seen += flat(batches)
        assert sizes == [[4, 4], [4, 4]]  # 5 full global batches -> 2 complete rounds
        assert len(set(seen)) == len(seen) == 16
    assert ShardedStream(list(range(N)), 4, rank=0, world_size=2, drop_last=True).num_batches() == 2


def test_resumable_loader_continues_where_it_stopped():
    def make():
        return ResumableLoader(ShardedStream(list(range(N)), 2, rank=0, world_size=2, shuffle=True, seed=1),
                               num_workers=2)

    full = make()
    epochs = [flat(full), flat(full)]
    assert epochs[0] != epochs[1] and len(epochs[0]) == len(epochs[1]) == 12  # 6 of the 12 global batches

    first = make()
    taken = []
    for batch in first:
        taken += flat([batch])
        if len(taken) == 6:  # "killed" after 3 batches
            break
    state = first.state_dict()
    assert state == {"epoch": 0, "batch": 3}
    resumed = make()
    resumed.load_state_dict(state)
    assert taken + flat(resumed) == epochs[0]
    assert flat(resumed) == epochs[1]


class NoisyDataset(Dataset):
    """Holds RNG objects of every kind: without re-seeding each worker's copy draws the same numbers."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.legacy = np.random.RandomState(0)
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([self.rng.random(), self.legacy.rand(), torch.rand(1, generator=self.gen).item()])


def worker_draws(init) -> list[torch.Tensor]:
    # batch_size 2 with 2 workers: worker 0 gets batch 0, worker 1 batch 1; the first draw of each worker
    # the loader's generator fixes torch's per-worker base seed, so runs are reproducible
    batches = list(DataLoader(NoisyDataset(), batch_size=2, num_workers=2, worker_init_fn=init,
                              generator=torch.Generator().manual_seed(0)))
    return [b[0] for b in batches]


def test_rng_objects_are_identical_across_workers_unless_reseeded():
    plain = worker_draws(None)
    assert torch.equal(plain[0], plain[1])  # the pitfall, still true with today's torch
    fixed = worker_draws(worker_init(rank=0))
    assert (fixed[0] != fixed[1]).all()
    other_rank = worker_draws(worker_init(rank=1))
    assert (other_rank[0] != fixed[0]).all()
    assert torch.equal(worker_draws(worker_init(rank=0))[0], fixed[0])  # reproducible


class FileRecords(Dataset):
    """Fixed-size records in a binary file, read through a per-process handle."""

    def __init__(self, path):
        self.handle = LazyHandle(functools.partial(open, path, "rb"))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        fh = self.handle.get()
        fh.seek(8 * i)
        value = int.from_bytes(fh.read(8), "little")
        return torch.tensor([value, os.getpid(), self.handle._pid])


def test_file_handles_are_opened_lazily_per_worker(tmp_path):
    path = tmp_path / "records.bin"
    path.write_bytes(b"".join((i * i).to_bytes(8, "little") for i in range(8)))
    data = FileRecords(path)
    assert data[3][0] == 9  # opens a handle in this process (the risky case: it is inherited by fork)
    parent = os.getpid()
    out = torch.cat(list(DataLoader(data, batch_size=2, num_workers=2)))
    assert out[:, 0].tolist() == [i * i for i in range(8)]
    assert (out[:, 1] == out[:, 2]).all() and (out[:, 1] != parent).all()  # each worker read with its own handle
    assert len(set(out[:, 1].tolist())) == 2
    # spawn/forkserver workers get a pickled copy: fine although a handle is open (a bare file object is not)
    copy = pickle.loads(pickle.dumps(data))
    assert copy.handle._handle is None and copy[2][0] == 4
    with pytest.raises(TypeError):
        pickle.dumps(data.handle._handle)
    copy.handle.close()
    data.handle.close()


def test_epoch_order_and_bad_arguments():
    assert torch.equal(epoch_order(5, 3, shuffle=False), torch.arange(5))
    assert torch.equal(epoch_order(50, 1, seed=2), epoch_order(50, 1, seed=2))
    assert not torch.equal(epoch_order(50, 1, seed=2), epoch_order(50, 2, seed=2))
    with pytest.raises(KexueError, match="rank"):
        ShardedStream(list(range(4)), 2, rank=2, world_size=2)
    with pytest.raises(KexueError, match="shuffle needs a sequence"):
        ShardedStream(functools.partial(iter, range(4)), 2, shuffle=True)
    with pytest.raises(KexueError, match="batch_size"):
        ShardedStream(list(range(4)), 0)
