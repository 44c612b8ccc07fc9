"""Reading any intermediate tensor of a model: PyTorch's counterpart of Keras' ``K.function`` (kexue.fm/archives/6575).

Su reads a layer's output by building a sub-model, and a tensor made inside a layer's ``call`` (an attention matrix)
with ``K.function``. Here one context manager does both:

- **module outputs** chosen by name or wildcard (``"blocks.*.attn"``: ``*`` is one name segment, ``**`` any number)
  are recorded with forward hooks;
- **tensors that no module outputs** are recorded where the model author put a
  :func:`kexue.nn.tap.tap` point (``tap("attn.weights", a)``), which costs one attribute read when nothing captures.

Records are detached (a stored graph would keep every activation alive) and cloned by default (an in-place op such
as ``ReLU(inplace=True)`` would otherwise overwrite them). Hooks and the tap listener are removed on exit, also when
the block raises. Capturing never changes the model's output: hooks return ``None``. A pattern that matches no
module is an error at entry; a tap pattern that saw no tap is an error at exit.
"""

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kexue.errors import KexueError
from kexue.nn import tap as _tap
from kexue.train.ema import canonical_name


def pattern_regex(pattern: str) -> re.Pattern:
    """Compile a dotted wildcard pattern: ``*`` matches one name segment, ``**`` any number of them."""
    if not pattern:
        raise KexueError("capture: an empty pattern; use a module name like 'blocks.0.attn' or a wildcard")
    segments = pattern.split(".")
    regex = ""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else r"(?:[^.]+\.)*"
        else:
            regex += "[^.]*".join(re.escape(piece) for piece in segment.split("*")) + ("" if last else r"\.")
    return re.compile(f"^{regex}$")


def _detach(value: Any, clone: bool) -> Any:
    """Detach (and clone) every tensor in a nest of tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.clone() if clone else value
    if isinstance(value, tuple | list):
        return type(value)(_detach(v, clone) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v, clone) for k, v in value.items()}
    return value


class capture:  # lower case: used like a function, ``with capture(model, "blocks.*") as cap:``
    """Record module outputs (by name pattern) and tapped tensors while the block runs.

    Example::

        with capture(model, "blocks.*.attn", taps=["*.weights"]) as cap:
            y = model(x)
        cap["blocks.0.attn"]          # the output of model.blocks[0].attn  (recorded once)
        cap.all("blocks.0.attn.weights")   # every value tapped under that name, in call order

    Args:
        model: the model whose submodules are hooked (wrapper prefixes ``module.``/``_orig_mod.`` are ignored
            in names). May be None to record taps only.
        *modules: module-name patterns. ``""`` is not allowed; use ``model``'s output directly instead.
        taps: tap-name patterns (see :func:`kexue.nn.tap.tap`).
        detach: store ``tensor.detach()`` (default); ``False`` keeps the graph (e.g. for gradients w.r.t. it).
        clone: store a copy, safe against later in-place ops (default); only meaningful with ``detach``.
    """

    def __init__(self, model: nn.Module | None, *modules: str, taps: Iterable[str] = (), detach: bool = True,
                 clone: bool = True) -> None:
        self.model = model
        self.module_patterns = tuple(modules)
        self.tap_patterns = tuple(taps)
        if self.module_patterns and model is None:
            raise KexueError("capture: module patterns need a model")
        if not self.module_patterns and not self.tap_patterns:
            raise KexueError("capture: give at least one module pattern or tap pattern")
        self.detach = detach
        self.clone = clone and detach
        self.records: dict[str, list[Any]] = {}
        self._handles: list[Any] = []
        self._tap_regexes = [(p, pattern_regex(p)) for p in self.tap_patterns]
        self._tap_hits: set[str] = set()
        self._previous = None
        self._active = False

    # --- recording -----------------------------------------------------------------------------------------------

    def _store(self, name: str, value: Any) -> None:
        stored = _detach(value, self.clone) if self.detach else value
        self.records.setdefault(name, []).append(stored)

    def _on_tap(self, name: str, tensor: torch.Tensor) -> None:
        for pattern, regex in self._tap_regexes:
            if regex.match(name):
                self._tap_hits.add(pattern)
                self._store(name, tensor)
                break
        if self._previous is not None:  # nested captures all see the tap
            self._previous(name, tensor)

    def __enter__(self) -> "capture":
        if self._active:
            raise KexueError("capture: this capture is already active")
        if self.module_patterns:
            names = {canonical_name(n): m for n, m in self.model.named_modules() if n}
            for pattern in self.module_patterns:
                regex = pattern_regex(pattern)
                matched = [n for n in names if regex.match(n)]
                if not matched:
                    sample = ", ".join(list(names)[:12])
                    self._remove()
                    raise KexueError(f"capture: pattern {pattern!r} matches no module of "
                                     f"{type(self.model).__name__} (some names: {sample})")
                for n in matched:
                    self._handles.append(names[n].register_forward_hook(self._hook(n)))
        if self._tap_regexes:
            self._previous = _tap.set_listener(self._on_tap)
        self._active = True
        return self

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._store(name, output)  # returns None: the model's output is untouched
        return hook

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove()
        if self._tap_regexes:
            _tap.set_listener(self._previous)
            self._previous = None
        self._active = False
        if exc_type is None:
            unseen = [p for p in self.tap_patterns if p not in self._tap_hits]
            if unseen:
                raise KexueError(f"capture: tap pattern(s) {unseen} saw no tap during the block "
                                 f"(names recorded: {sorted(self.records)})")

    # --- reading ---------------------------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        """The value recorded under ``name``; an error if it was recorded several times (use :meth:`all`)."""
        values = self.all(name)
        if len(values) != 1:
            raise KexueError(f"capture: {name!r} was recorded {len(values)} times (a module called several times or "
                             "a shared tap name); use .all(name) for the list")
        return values[0]

    def all(self, name: str) -> list[Any]:
        """Every value recorded under ``name``, in call order."""
        if name not in self.records:
            raise KexueError(f"capture: nothing recorded under {name!r}; recorded: {sorted(self.records)}")
        return self.records[name]

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def keys(self) -> list[str]:
        return list(self.records)

    def clear(self) -> None:
        """Release the recorded tensors."""
        self.records.clear()
