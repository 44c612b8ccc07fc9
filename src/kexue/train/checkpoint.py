"""Safe, atomic tensor files: safetensors (no pickle), written to a temp file and renamed into place.

A reader never sees half a file, and loading cannot execute code. Metadata (str -> str) rides along, e.g. a config
hash so that a checkpoint from a different config is refused.
"""

import os
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
