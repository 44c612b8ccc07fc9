"""Progress bars shared by every long loop (training, fetching, evaluation).

One switch: :func:`set_quiet` (the CLI's ``--quiet``) silences them all. Otherwise tqdm shows a bar only when
stderr is a terminal, so logs and CI output stay clean.
"""

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or restore (``False``) every kexue progress bar in this process."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", leave: bool = False) -> "tqdm[T]":
    """A tqdm bar that honours :func:`set_quiet` and disables itself when stderr is not a TTY.

    Use ``bar.set_postfix(loss=...)`` to show the current loss or metric.
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=True if _quiet else None,
                dynamic_ncols=True)

