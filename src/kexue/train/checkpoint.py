"""Safe, atomic tensor files and training checkpoints: safetensors and JSON (no pickle), temp file + rename.

A reader never sees half a file, and loading cannot execute code. Metadata (str -> str) rides along, e.g. a config
hash so that a checkpoint from a different config is refused.
"""

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kexue._fs import write_atomic
from kexue.errors import KexueError


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    Tensors are saved contiguous and on the CPU; tensors that share storage are saved as separate copies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(data, str(tmp), metadata=metadata))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`; returns ``(tensors, metadata)``.

    Raises:
        KexueError: the file is missing, truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.exists():
        raise KexueError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise KexueError(f"checkpoint {path} is a folder; expected a .safetensors file")
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
#   state.json            everything else (optimizer, scheduler, RNG states, counters) as JSON, in which each
#                         tensor is a reference {"__tensor__": "7"} into
#   state.safetensors     the tensors of that state (Adam's moments, the torch RNG state, ...)
# It is written into a hidden temp folder and renamed into place, so a folder with the final name is complete.
# Checkpoints written before state.json existed hold a ``state.pt`` instead; it is still read, with
# ``torch.load(weights_only=True)`` (tensors and plain containers only: no code runs).

_STEP_DIR = re.compile(r"^step-(\d{9})$")
# JSON has only string keys, no tuples and no tensors: such values are written as one-key objects with these tags
# (a dict whose own keys would clash with a tag is written as a list of items too).
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON-able data; its tensors go to ``tensors`` under fresh keys and are referenced by key."""
    if isinstance(obj, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = obj
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not {_TENSOR, _TUPLE, _ITEMS} & set(obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {_ITEMS: [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise KexueError(f"checkpoint state holds a value of type {type(obj).__name__}; only tensors, numbers, strings, "
                     "None and dicts, lists and tuples of them can be stored")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {_TENSOR}:
        return tensors[obj[_TENSOR]]
    if set(obj) == {_TUPLE}:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if set(obj) == {_ITEMS}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


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
            RNG states, counters); stored as JSON, its tensors with safetensors. Loading gives back the same
            nest (dict keys of any of those types, tuples as tuples, floats bit-exact, tensors on the CPU).
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
        state_tensors: dict[str, torch.Tensor] = {}
        text = json.dumps(_encode({"step": step, **state}, state_tensors))
        save_tensors(tmp / "state.safetensors", state_tensors)
        with open(tmp / "state.json", "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
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


def load_checkpoint(path: str | Path, config: dict | None = None, *,
                    ignore: tuple[str, ...] = ("device", "max_rollbacks"),
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder; returns ``(tensors, state)``.

    Args:
        config: if given, the checkpoint's config must equal it (keys in ``ignore`` aside: by default where the
            run computes and how often its NaN guard may roll back, which do not change what it computes).

    Returns:
        The tensors on ``device``; the state (its tensors on the CPU, where RNG states must be and whence
        ``Optimizer.load_state_dict`` moves them to its parameters).

    Raises:
        KexueError: missing, corrupt or truncated files, or a checkpoint written under a different config.
    """
    path = Path(path)
    if not path.exists():
        raise KexueError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise KexueError(f"checkpoint {path} is a file; expected a checkpoint folder (step-NNNNNNNNN/ holding "
                         "tensors.safetensors and state.json)")
    tensors, metadata = load_tensors(path / "tensors.safetensors", device=device)
    if config is not None:
        saved = json.loads(metadata.get("config", "{}"))
        diff = config_differences(saved, config, ignore)
        if diff:
            raise KexueError(f"checkpoint {path} was written under a different config ({'; '.join(diff)}); "
                             "resume with the same config or start a new run")
    state = _load_state(path)
    if not isinstance(state, dict) or str(state.get("step")) != metadata.get("step"):
        raise KexueError(f"checkpoint {path}: tensors and state disagree on the step; the folder is inconsistent")
    return tensors, state


def _load_state(path: Path) -> Any:
    """The non-tensor state of checkpoint folder ``path``: ``state.json`` + ``state.safetensors``, or a legacy
    ``state.pt``."""
    hint = "delete the folder to resume from an older checkpoint"
    if not (path / "state.json").is_file() and (path / "state.pt").is_file():
        try:  # written by an older kexue; weights_only=True unpickles tensors and plain containers only
            return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError on damaged files
            raise KexueError(f"checkpoint {path / 'state.pt'} is corrupt or truncated ({type(err).__name__}: "
                             f"{str(err)[:200]}); {hint}") from None
    if not (path / "state.json").is_file():
        raise KexueError(f"checkpoint {path} has no state.json; it is incomplete ({hint})")
    state_tensors, _ = load_tensors(path / "state.safetensors")
    try:
        return _decode(json.loads((path / "state.json").read_text()), state_tensors)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise KexueError(f"checkpoint {path / 'state.json'} is corrupt or truncated ({type(err).__name__}: "
                         f"{str(err)[:200]}); {hint}") from None


def prune_checkpoints(directory: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoint folders (written by :func:`save_checkpoint`)."""
    if keep_last < 1:
        raise KexueError(f"keep_last must be >= 1, got {keep_last}")
    removed = []
    for _, path in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(path)
        removed.append(path)
    return removed
