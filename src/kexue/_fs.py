"""Files and folders the user names: checked before use, and written atomically.

A folder the user gives (``--out``, ``--data-dir``) is checked before anything is created in it, so a path that is
a file, lies under a file or cannot be written is one :class:`~kexue.errors.ConfigError` naming the option, not an
``OSError`` from deep inside a run. Files are written to a temporary name in the same folder and renamed into
place, so a reader (or a crash) never leaves half a file under the real name.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

from kexue.errors import ConfigError


def check_folder(path: str | Path, what: str) -> Path:
    """Refuse a ``path`` that is a file or lies under one (it need not exist yet); returns it as a ``Path``.

    Args:
        what: how the user named the folder, e.g. ``"--out"``; the message starts with it.
    """
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            break
    else:
        return path
    if not parent.is_dir():
        where = "is a file" if parent == path else f"lies under {parent}, which is a file"
        raise ConfigError(f"{what} {path} {where}; expected a folder")
    return path


def ensure_folder(path: str | Path, what: str) -> Path:
    """Create folder ``path`` (and its parents) if needed, after :func:`check_folder`; it must be writable.

    Raises:
        ConfigError: ``path`` is a file or under one, cannot be created, or is not writable; the message names
            ``what``.
    """
    path = check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be created ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable; choose a folder you can write to")
    return path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary file in ``path``'s folder, then ``os.replace`` it onto ``path``; the temporary
    file is removed whatever happens."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def torn_tail(path: str | Path) -> str | None:
    """The last line of ``path`` if the file does not end with a newline (an append cut short), else None."""
    text = Path(path).read_text(errors="replace")
    return text.rsplit("\n", 1)[-1] if text and not text.endswith("\n") else None


def _jsonl(path: Path) -> list[tuple[str, dict | None]]:
    """Each non-blank line of ``path`` with its JSON object, or None where the line is not one."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            out.append((line, record if isinstance(record, dict) else None))
    return out


def read_jsonl(path: str | Path) -> tuple[list[dict], list[str]]:
    """The records of a JSON-lines file, and its non-blank lines that are not JSON objects (e.g. torn by a crash).

    Returns:
        ``(records, bad_lines)``; a missing file gives ``([], [])``.
    """
    path = Path(path)
    lines = _jsonl(path) if path.exists() else []
    return [r for _, r in lines if r is not None], [line for line, r in lines if r is None]


def drop_jsonl_lines(path: str | Path, drop: Callable[[dict], bool], to: str | Path) -> tuple[int, int]:
    """Move the records of JSON-lines file ``path`` for which ``drop`` is true, and every line that is not a JSON
    object (a torn append), to the end of ``to``; ``path`` is rewritten atomically with the rest, in order.

    Returns:
        ``(records moved, bad lines moved)``; ``(0, 0)`` leaves both files untouched.
    """
    path = Path(path)
    if not path.is_file():
        return 0, 0
    keep, moved, bad = [], [], 0
    for line, record in _jsonl(path):
        bad += record is None
        (moved if record is None or drop(record) else keep).append(line)
    if moved:
        with open(to, "a") as fh:
            fh.write("".join(line + "\n" for line in moved))
    if moved or torn_tail(path) is not None:  # a complete last record without its newline gets one
        write_text_atomic(path, "".join(line + "\n" for line in keep))
    return len(moved) - bad, bad
