from dataclasses import dataclass

import pytest

from kexue.errors import ConfigError
from kexue.experiments.config import ExperimentConfig, apply_overrides, describe, param, parse_overrides, validate


@dataclass
class Cfg(ExperimentConfig):
    steps: int = param(10, "training steps", min=1)
    lr: float = param(1e-3, "learning rate", min=0.0, max=1.0)
    kind: str = param("a", "which kind", choices=("a", "b"))
    dims: tuple[int, ...] = param((1, 2), "dimensions", min=1)
    flag: bool = param(False, "a switch")
    limit: int | None = param(None, "optional cap", min=0)


def test_parses_each_type():
    cfg = apply_overrides(Cfg(), {"steps": "5", "lr": "0.5", "kind": "b", "dims": "3, 4,5", "flag": "yes",
                                  "limit": "7", "seed": "3"})
    assert (cfg.steps, cfg.lr, cfg.kind, cfg.dims, cfg.flag, cfg.limit, cfg.seed) == (5, 0.5, "b", (3, 4, 5), True,
                                                                                      7, 3)
    assert apply_overrides(cfg, {"limit": "none"}).limit is None
    assert apply_overrides(cfg, {"flag": "0"}).flag is False


def test_overrides_do_not_mutate_and_accept_python_values():
    base = Cfg()
    cfg = apply_overrides(base, {"dims": [7, 8], "steps": 3})
    assert cfg.dims == (7, 8) and cfg.steps == 3 and base.steps == 10


@pytest.mark.parametrize("overrides, message", [
    ({"stepz": "1"}, "unknown key 'stepz'"),
    ({"steps": "ten"}, "not a valid int"),
    ({"steps": "0"}, "out of range"),
    ({"lr": "2"}, "out of range"),
    ({"kind": "c"}, "not one of: a, b"),
    ({"dims": "1,0"}, "out of range"),
    ({"flag": "maybe"}, "not a valid bool"),
    ({"device": "tpu"}, "not one of: cpu, cuda"),
])
def test_bad_values_name_the_key_and_list_valid_keys(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(Cfg(), overrides)
    text = str(info.value)
    assert "\n" not in text
    assert "valid keys: seed, device, steps, lr, kind, dims, flag, limit" in text


def test_validate_catches_bad_defaults():
    with pytest.raises(ConfigError, match="steps=0"):
        validate(Cfg(steps=0))


def test_parse_overrides():
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_describe_lists_every_field():
    rows = describe(Cfg)
    assert [r[0] for r in rows] == ["seed", "device", "steps", "lr", "kind", "dims", "flag", "limit"]
    assert rows[5][1] == "comma-separated ints"
