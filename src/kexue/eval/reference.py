"""Where reference metric values live, so that reports can show a model's scores beside the real-data floor.

``kexue run eval-reference`` writes ``<data cache>/eval-reference/reference-<recipe>-s<seed>.json``: for each data
set and metric, the value of real test data against real train data and of simple baselines, each with its provenance
(feature network and weights hash, sample counts, seed). An experiment that scores a generator reads it with
:func:`load_reference` and should compare only values computed with the same feature-network hash and sample count.
"""

import json
import os
from pathlib import Path
from typing import Any

from kexue.data.cache import data_dir

FOLDER = "eval-reference"


def reference_path(recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> Path:
    """The reference file for the feature-network ``recipe`` and ``seed`` in the data cache ``root``."""
    if not recipe.isidentifier():
        raise ValueError(f"recipe must be a plain name, got {recipe!r}")
    return data_dir(root) / FOLDER / f"reference-{recipe}-s{seed}.json"


def save_reference(values: dict[str, Any], recipe: str = "standard", seed: int = 0,
                   root: str | Path | None = None) -> Path:
    """Write ``values`` (JSON-serialisable) atomically to :func:`reference_path`; returns the path."""
    path = reference_path(recipe, seed, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_reference(recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> dict[str, Any] | None:
    """The reference values written by ``kexue run eval-reference``, or ``None`` if it has not been run."""
    path = reference_path(recipe, seed, root)
    if not path.is_file():
        return None
    return json.loads(path.read_text())
