"""Typed experiment configs and validated ``key=value`` overrides.

Every experiment's config is a dataclass deriving from :class:`ExperimentConfig`. Each field is declared with
:func:`param`, which records a help text and the allowed range or choices, so that the CLI can reject a bad
``--set`` with one line that lists the valid keys instead of failing somewhere inside the run.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from kexue.errors import ConfigError


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, allow_empty: bool = False, allow_nonfinite: bool = False) -> Any:
    """Declare a config field with its help text and allowed values (inclusive ``min``/``max``, or ``choices``).

    Args:
        allow_empty: a tuple field may be empty (by default it needs at least one item).
        allow_nonfinite: a float field may be NaN or +-inf (by default only finite numbers pass).
    """
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices,
                                            "allow_empty": allow_empty, "allow_nonfinite": allow_nonfinite})


@dataclass
class ExperimentConfig:
    """Fields every experiment has. Subclasses add their own with :func:`param`, and override :meth:`check` for
    constraints between fields."""

    # NumPy's global seed is 32-bit: a larger seed would be silently reduced modulo 2**32.
    seed: int = param(0, "random seed for python, numpy and torch", min=0, max=2**32 - 1)
    device: str = param("cpu", "where tensors live", choices=("cpu", "cuda"))
    max_rollbacks: int = param(5, "NaN guard: rollbacks to the last checkpoint before the run stops as failed",
                               min=0)

    def check(self) -> None:
        """Constraints between fields (each field's own range is checked already); raise :class:`ConfigError`."""


def config_fields(cfg_or_cls: Any) -> dict[str, tuple[Any, dict]]:
    """Map each field name to ``(resolved type, metadata)``."""
    cls = cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


def _valid_keys(cls: type) -> str:
    return ", ".join(config_fields(cls))


def _parse(text: str, tp: Any) -> Any:
    """Parse a command-line string into ``tp`` (bool, int, float, str, or a tuple of those)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # ``X | None``: "none" means None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() == "none":
            return None
        return _parse(text, args[0])
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_parse(t.strip(), item) for t in text.split(",") if t.strip())
    if tp is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    if tp is str:
        return text
    raise TypeError(f"cannot parse a value of type {tp}")


def _coerce(value: Any, tp: Any) -> Any:
    """Check a Python value (an API override, a saved config.json entry) against ``tp``; lists become tuples and
    ints become floats where a float is declared. Raises ``ValueError`` if it is not of the type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _coerce(value, next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0]) for v in value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (bool, int, str) and type(value) is tp:
        return value
    raise ValueError(f"expected a {tp.__name__}, got {value!r}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"comma-separated {_type_name(typing.get_args(tp)[0])}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(cls: type, key: str, value: Any, meta: dict) -> None:
    if isinstance(value, tuple) and not value and not meta.get("allow_empty"):
        raise ConfigError(f"{key} is empty; give at least one value, comma-separated (valid keys: {_valid_keys(cls)})")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item) and not meta.get("allow_nonfinite"):
            raise ConfigError(f"{key}={item!r} is not a finite number (valid keys: {_valid_keys(cls)})")
        if meta.get("choices") is not None and item not in meta["choices"]:
            choices = ", ".join(map(str, meta["choices"]))
            raise ConfigError(f"{key}={item!r} is not one of: {choices} (valid keys: {_valid_keys(cls)})")
        lo, hi = meta.get("min"), meta.get("max")
        is_number = isinstance(item, int | float) and not isinstance(item, bool)
        if is_number and ((lo is not None and item < lo) or (hi is not None and item > hi)):
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"{key}={item!r} is out of range {rng} (valid keys: {_valid_keys(cls)})")


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Check every field of ``cfg`` against its declared range or choices, then :meth:`~ExperimentConfig.check`
    the constraints between fields; return ``cfg``."""
    for key, (_, meta) in config_fields(cfg).items():
        _check_value(type(cfg), key, getattr(cfg, key), meta)
    cfg.check()
    return cfg


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Split ``["a=1", "b=x"]`` into ``{"a": "1", "b": "x"}``; a missing ``=`` is an error."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def apply_overrides(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``overrides`` applied (strings are parsed to the field's type), validated.

    Raises:
        ConfigError: on an unknown key, a value of the wrong type, or a value out of range; the message lists
            the valid keys.
    """
    cls = type(cfg)
    fields = config_fields(cls)
    changes = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown key {key!r} for {cls.__name__} (valid keys: {_valid_keys(cls)})")
        tp, _ = fields[key]
        try:
            changes[key] = _parse(raw, tp) if isinstance(raw, str) else _coerce(raw, tp)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}={raw!r} is not a valid {_type_name(tp)} "
                              f"(valid keys: {_valid_keys(cls)})") from None
    return validate(dataclasses.replace(cfg, **changes))


def describe(cls: type) -> list[tuple[str, str, str, str]]:
    """Rows ``(key, type, default, help)`` for ``kexue run NAME --help``-style listings."""
    rows = []
    for f in dataclasses.fields(cls):
        tp, meta = config_fields(cls)[f.name]
        rows.append((f.name, _type_name(tp), repr(f.default), meta.get("help", "")))
    return rows


def check_subset_holds_a_batch(cfg: ExperimentConfig, subset: str, batch: str) -> None:
    """For :meth:`ExperimentConfig.check`: a non-zero ``subset`` (0 = the whole set) holds at least one ``batch``."""
    n, size = getattr(cfg, subset), getattr(cfg, batch)
    if n and n < size:
        raise ConfigError(f"{subset}={n} is smaller than one batch ({batch}={size}); use {subset}=0 (all) or at "
                          f"least {size}, or lower {batch}")


def check_divisible(cfg: ExperimentConfig, key: str, by: str) -> None:
    """For :meth:`ExperimentConfig.check`: field ``key`` is a multiple of field ``by`` (e.g. width by heads)."""
    value, divisor = getattr(cfg, key), getattr(cfg, by)
    if value % divisor:
        raise ConfigError(f"{key}={value} is not a multiple of {by}={divisor}; choose {key} and {by} so that "
                          f"{by} divides {key}")
