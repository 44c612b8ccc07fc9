"""Safe, atomic tensor files and training checkpoints: safetensors (no pickle), temp file + rename.

A reader never sees half a file, and loading cannot execute code. Metadata (str -> str) rides along, e.g. a config
hash so that a checkpoint from a different config is refused.
"""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kexue.errors import KexueError


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Tensors are saved contiguous and on the CPU; tensors that share storage are saved as separate copies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    try:
        save_file(data, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; returns ``(tensors, metadata)``.

    Raises:
        KexueError: the file is missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise KexueError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise KexueError(f"checkpoint {path} is corrupt or truncated ({err}); delete it or restore a good copy") \
            from None
    return tensors, metadata


# --- training checkpoints -------------------------------------------------------------------------------------------
#
# A training checkpoint is a folder ``step-000000123/`` holding
#   tensors.safetensors   model (+ EMA, ...) tensors, metadata: step and the config as JSON
#   state.pt              everything else (optimizer, scheduler, RNG states, counters), read with weights_only=True
# It is written into a hidden temp folder and renamed into place, so a folder with the final name is complete.

_STEP_DIR = re.compile(r"^step-(\d{9})$")


def config_json(config: dict | None) -> str:
    """Canonical JSON of a config dict (sorted keys), as stored in checkpoint metadata."""
    return json.dumps(config if config is not None else {}, sort_keys=True, default=str)


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: saved -> current`` for every key whose value differs (JSON-normalised), ignoring ``ignore``."""
    saved, current = json.loads(config_json(saved)), json.loads(config_json(current))
    keys = sorted((set(saved) | set(current)) - set(ignore))
    return [f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in keys
            if saved.get(k, "<absent>") != current.get(k, "<absent>")]


def save_checkpoint(directory: str | Path, step: int, tensors: dict[str, torch.Tensor], state: dict,
                    config: dict | None = None) -> Path:
    """Write checkpoint ``directory/step-NNNNNNNNN/`` atomically; returns its path.

    Args:
        tensors: name -> tensor (model weights, EMA shadow); stored with safetensors.
        state: a nest of dicts/lists/tuples of tensors, numbers, strings and None (optimizer and scheduler state,
            RNG states, counters); stored with ``torch.save`` and loaded with ``weights_only=True``.
        config: the run's resolved config; a checkpoint is refused for a different config.

    Raises:
        KexueError: a checkpoint for this step already exists (it is never overwritten).
    """
    if not (isinstance(step, int) and 0 <= step < 10**9):
        raise KexueError(f"checkpoint step must be an int in [0, 1e9), got {step!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:09d}"
    if final.exists():
        raise KexueError(f"checkpoint {final} already exists; refusing to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:09d}-", dir=directory))
    try:
        save_tensors(tmp / "tensors.safetensors", tensors, metadata={"step": str(step), "config": config_json(config)})
        with open(tmp / "state.pt.tmp", "wb") as fh:
            torch.save({"step": step, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp / "state.pt.tmp", tmp / "state.pt")
        os.rename(tmp, final)  # atomic on POSIX; fails rather than replaces if ``final`` appeared meanwhile
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as ``(step, path)``, oldest first (temp folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def load_checkpoint(path: str | Path, config: dict | None = None, *, ignore: tuple[str, ...] = ("device",),
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder; returns ``(tensors, state)``.

    Args:
        config: if given, the checkpoint's config must equal it (keys in ``ignore`` aside).

    Raises:
        KexueError: missing, corrupt or truncated files, or a checkpoint written under a different config.
    """
    path = Path(path)
    if not path.is_dir():
        raise KexueError(f"checkpoint {path} does not exist")
    tensors, metadata = load_tensors(path / "tensors.safetensors", device=device)
    if config is not None:
        saved = json.loads(metadata.get("config", "{}"))
        diff = config_differences(saved, config, ignore)
        if diff:
            raise KexueError(f"checkpoint {path} was written under a different config ({'; '.join(diff)}); "
                             "resume with the same config or start a new run")
    try:
        state = torch.load(path / "state.pt", map_location=device, weights_only=True)
    except FileNotFoundError:
        raise KexueError(f"checkpoint {path} has no state.pt; it is incomplete") from None
    except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError on damaged files
        raise KexueError(f"checkpoint {path / 'state.pt'} is corrupt or truncated ({type(err).__name__}: "
                         f"{str(err)[:200]}); delete the folder to resume from an older checkpoint") from None
    if str(state.get("step")) != metadata.get("step"):
        raise KexueError(f"checkpoint {path}: tensors and state disagree on the step; the folder is inconsistent")
    return tensors, state


def prune_checkpoints(directory: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoint folders (written by :func:`save_checkpoint`)."""
    if keep_last < 1:
        raise KexueError(f"keep_last must be >= 1, got {keep_last}")
    removed = []
    for _, path in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(path)
        removed.append(path)
    return removed
