"""Fetch data sets of the catalogue (:mod:`kexue.data.catalogue`) into the cache folder, and verify them.

Each set is built in a temporary folder inside the cache and moved into place only after its packages verified
(:mod:`kexue.data.packages` downloads, unpacks and checks them), with a marker file recording the package checksums,
the sha256 of every kept output and the list of its files: :func:`is_available` only reads the marker, :func:`verify`
re-hashes the files. A folder holding files that no fetch wrote is never replaced.

The catalogue's and the packages' public names are re-exported here (their import path before the split).
"""

import json
import shutil
import tempfile
from pathlib import Path

from kexue._fs import ensure_folder
from kexue._progress import progress
from kexue.data import cache, packages
from kexue.data.cache import MARKER
from kexue.data.catalogue import DATASETS, QUICK_SETS, DatasetInfo, Source
from kexue.data.packages import Package, digest
from kexue.errors import ConfigError, FetchError

__all__ = ["DATASETS", "QUICK_SETS", "DatasetInfo", "Package", "Source", "digest", "fetch", "foreign_files",
           "is_available", "verify"]


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
                    archive = packages.download(package, tmp / "download" / package.name, root, info.name)
                    package_root = packages.extract(package, archive, tmp / "extract" / package.name)
                    packages.check(package_root, package.sha256, package, info.name)
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
