"""Reference values of the offline metrics, so that a report can show a model's scores beside the real-data floor.

Scores on a locally trained feature network have no published scale, so they mean something only next to values
measured on the same network and sample count. ``kexue run eval-reference`` measures them (real test data against
real train data, and simple baselines) and writes ``<data cache>/eval-reference/reference-<recipe>-s<seed>.json``:
one JSON object whose keys are ``"<section>/<name>"`` and whose values are metric records, each with its provenance.
A run replaces the keys it computes and keeps the others; every record says how many samples it used.

API for experiments that report model scores (these names are stable):

- :func:`load_reference` ``(recipe, seed, root) -> dict | None``: the whole file, ``None`` before the first run.
- :func:`reference_entries` ``(section, *, weights_sha256=None, num_samples=None, ...) -> {name: record}``: the
  records of one section, keeping only those computed with the given feature-network weights and sample count
  (records that do not depend on a feature network are never filtered out by the hash).
- :func:`reference_rows` ``(section, columns, ...) -> [[label, value, ...], ...]``: the same as table rows, to append
  under a model's own row in ``run.table``.
- :func:`reference_status` ``(section, ...) -> str``: one sentence for the report saying where the rows come from,
  or why there are none (not computed yet, other feature network, other sample count).

Sections and the fields of their records:

====================================  ==========================================================================
section                               record
====================================  ==========================================================================
``mnist/images``,                     :func:`kexue.eval.image_metrics.image_metrics`: ``fid``, ``kid``,
``fashion-mnist/images``              ``kid_std``, ``precision``, ``recall``, ``classifier_score``,
                                      ``provenance`` (``weights_sha256``, ``num_fake``, ``num_real``, ...)
``stacked-mnist``                     :meth:`kexue.eval.modes.ModeCount.as_dict`: ``modes_covered``,
                                      ``num_modes``, ``kl_to_uniform``, ``num_samples``, ``provenance``
``mixture-8``, ``mixture-25``         :meth:`kexue.eval.modes.MixtureModes.as_dict` plus ``std``
``likelihood``                        ``ppca``: ``exact_nll_nats``, ``bits_per_dim``, ``curve`` (IW gap vs K)
``anomaly/mnist-holdout-<digit>``,    :func:`kexue.eval.anomaly.anomaly_scores`: ``auprc``, ``auroc``, ``f1``,
``anomaly/shuttle``                   ``anomaly_rate``, ...
====================================  ==========================================================================

Names in the image sections: ``REAL`` (real train images: the floor a perfect model reaches at this sample count)
and the baselines of ``eval-reference`` (noisy real images, one class only, a PCA-Gaussian, independent pixels).

Example, in a GAN experiment::

    m = image_metrics(net, fake, real, reference="mnist/test")
    cols = ("fid", "kid", "precision", "recall", "classifier_score")
    rows = [["WGAN-GP", *(m[c] for c in cols)]]
    rows += reference_rows("mnist/images", cols, weights_sha256=m["provenance"]["weights_sha256"],
                           num_samples=m["provenance"]["num_fake"])
    run.table(["model", *cols], rows, caption=reference_status("mnist/images", ...same filters...))
"""

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from kexue.data.cache import data_dir

FOLDER = "eval-reference"
REAL = "train (real)"  # name of the real-vs-real record in the image sections
COMMAND = "kexue run eval-reference"

__all__ = ["COMMAND", "FOLDER", "REAL", "load_reference", "reference_entries", "reference_path", "reference_rows",
           "reference_status", "save_reference"]


def reference_path(recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> Path:
    """The reference file for the feature-network ``recipe`` and ``seed`` in the data cache ``root``."""
    if not recipe.isidentifier():
        raise ValueError(f"recipe must be a plain name, got {recipe!r}")
    return data_dir(root) / FOLDER / f"reference-{recipe}-s{seed}.json"


def save_reference(values: dict[str, Any], recipe: str = "standard", seed: int = 0,
                   root: str | Path | None = None, *, merge: bool = True) -> Path:
    """Write ``values`` (JSON-serialisable) atomically to :func:`reference_path`; returns the path.

    With ``merge`` (the default) the keys of ``values`` replace those already in the file and the others are kept,
    so a run over one data set does not erase another's; every record carries its own provenance. An unreadable
    existing file is replaced.
    """
    path = reference_path(recipe, seed, root)
    if merge:
        with contextlib.suppress(ValueError):  # a corrupt file holds nothing worth keeping
            values = {**(load_reference(recipe, seed, root) or {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_reference(recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> dict[str, Any] | None:
    """The reference values written by ``kexue run eval-reference``, or ``None`` if it has not been run.

    Raises:
        ValueError: the file exists but is not a JSON object (it was edited or truncated by hand).
    """
    path = reference_path(recipe, seed, root)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"reference file {path} is not valid JSON ({err}); rerun `{COMMAND}`") from None
    if not isinstance(values, dict):
        raise ValueError(f"reference file {path} must hold a JSON object; rerun `{COMMAND}`")
    return values


# --------------------------------------------------------------------------------------------------------------
# Reading one section, filtered to what is comparable
# --------------------------------------------------------------------------------------------------------------


def _hash_of(record: dict) -> str | None:
    prov = record.get("provenance")
    return (prov.get("weights_sha256") if isinstance(prov, dict) else None) or record.get("weights_sha256")


def _samples_of(record: dict) -> int | None:
    prov = record.get("provenance")
    if isinstance(prov, dict) and "num_fake" in prov:
        return prov["num_fake"]
    return record.get("num_samples")


def _section(section: str, recipe: str, seed: int, root: str | Path | None) -> tuple[dict | None, dict]:
    if not isinstance(section, str) or not section.strip("/"):
        raise ValueError(f"section must be a name such as 'mnist/images', got {section!r}")
    values = load_reference(recipe, seed, root)
    prefix = section.strip("/") + "/"
    found = {} if values is None else {k[len(prefix):]: v for k, v in values.items()
                                       if k.startswith(prefix) and isinstance(v, dict)}
    return values, found


def _keep(record: dict, weights_sha256: str | None, num_samples: int | None) -> bool:
    h = _hash_of(record)
    if weights_sha256 is not None and h is not None and h != weights_sha256:
        return False
    return num_samples is None or _samples_of(record) in (None, num_samples)


def reference_entries(section: str, *, weights_sha256: str | None = None, num_samples: int | None = None,
                      recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> dict[str, dict]:
    """Reference records of one section, e.g. ``"mnist/images"``, keyed by name (see the module table).

    Args:
        section: the key prefix, without the trailing ``/``.
        weights_sha256: keep only records computed with this feature network (records without one are kept).
        num_samples: keep only records with this many samples (FID and the mode KL are biased by N).
        recipe, seed: the feature network's recipe and seed (they name the file).
        root: the data cache (default: :func:`kexue.data.cache.data_dir`).

    Returns:
        ``{name: record}`` (``REAL`` first, then by name), empty if ``eval-reference`` has not been run or nothing
        matches.
    """
    _, found = _section(section, recipe, seed, root)
    names = sorted(found, key=lambda name: (name != REAL, name))  # the real-data floor first
    return {name: found[name] for name in names if _keep(found[name], weights_sha256, num_samples)}


def reference_rows(section: str, columns: tuple[str, ...] | list[str], *, label: str = "reference",
                   **filters: Any) -> list[list]:
    """Table rows ``[f"{label}: {name}", record[c] for c in columns]`` for :func:`reference_entries`.

    A column a record lacks is shown as ``"–"``. ``filters`` are those of :func:`reference_entries`.
    """
    return [[f"{label}: {name}", *(rec.get(c, "–") for c in columns)]
            for name, rec in reference_entries(section, **filters).items()]


def reference_status(section: str, *, weights_sha256: str | None = None, num_samples: int | None = None,
                     recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> str:
    """One sentence for a report: where the reference rows of ``section`` come from, or why there are none."""
    values, found = _section(section, recipe, seed, root)
    path = reference_path(recipe, seed, root)
    if values is None:
        return f"No reference values yet: run `{COMMAND}` to show the real-data floor and baselines here."
    if not found:
        return f"The reference file {path.name} has no section {section!r}; rerun `{COMMAND}`."
    kept = {n: r for n, r in found.items() if _keep(r, weights_sha256, num_samples)}
    if not kept:
        hashes = sorted({str(_hash_of(r))[:12] for r in found.values()})
        counts = sorted({str(_samples_of(r)) for r in found.values()})
        return (f"Reference values for {section!r} were computed with feature net {', '.join(hashes)} on "
                f"{', '.join(counts)} samples, not comparable with this run (feature net "
                f"{str(weights_sha256)[:12]}, {num_samples} samples); not shown.")
    sample = next(iter(kept.values()))
    return (f"Reference rows: `{COMMAND}` ({path.name}), feature net {str(_hash_of(sample))[:12]}, "
            f"{_samples_of(sample)} samples per set.")
