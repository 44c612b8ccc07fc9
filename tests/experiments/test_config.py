from dataclasses import dataclass

import pytest

from kexue.errors import ConfigError
from kexue.experiments.config import (
    ExperimentConfig,
    apply_overrides,
    check_divisible,
    check_subset_holds_a_batch,
    describe,
    param,
    parse_overrides,
    validate,
)


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
    ({"lr": "nan"}, "lr=nan is not a finite number"),  # NaN passes every range comparison
    ({"lr": "-inf"}, "lr=-inf is not a finite number"),
    ({"dims": ""}, "dims is empty"),
    ({"dims": " , "}, "dims is empty"),
    ({"seed": str(2**32)}, "out of range"),  # NumPy's seed is 32-bit: no silent modulo
])
def test_bad_values_name_the_key_and_list_valid_keys(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(Cfg(), overrides)
    text = str(info.value)
    assert "\n" not in text
    assert "valid keys: seed, device, max_rollbacks, steps, lr, kind, dims, flag, limit" in text


def test_validate_catches_bad_defaults():
    with pytest.raises(ConfigError, match="steps=0"):
        validate(Cfg(steps=0))


def test_parse_overrides():
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_describe_lists_every_field():
    rows = describe(Cfg)
    assert [r[0] for r in rows] == ["seed", "device", "max_rollbacks", "steps", "lr", "kind", "dims", "flag", "limit"]
    assert rows[6][1] == "comma-separated ints"


@dataclass
class Paired(ExperimentConfig):
    width: int = param(8, "width", min=1)
    heads: int = param(2, "heads", min=1)
    subset: int = param(0, "images (0 = all)", min=0)
    batch: int = param(4, "batch", min=1)
    extra: tuple[float, ...] = param((), "optional values", allow_empty=True)
    scale: float = param(float("inf"), "a cap that may be infinite", allow_nonfinite=True)

    def check(self) -> None:
        check_divisible(self, "width", "heads")
        check_subset_holds_a_batch(self, "subset", "batch")


@pytest.mark.parametrize("overrides, message", [
    ({"width": "9"}, "width=9 is not a multiple of heads=2"),
    ({"heads": "3"}, "width=8 is not a multiple of heads=3"),
    ({"subset": "3"}, r"subset=3 is smaller than one batch \(batch=4\)"),
    ({"subset": "8", "batch": "9"}, r"subset=8 is smaller than one batch \(batch=9\)"),
])
def test_constraints_between_fields_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(Paired(), overrides)
    assert "\n" not in str(info.value)


def test_keys_may_allow_empty_tuples_and_non_finite_numbers():
    cfg = apply_overrides(Paired(), {"extra": "", "scale": "nan", "subset": "0", "batch": "100"})
    assert cfg.extra == () and cfg.scale != cfg.scale


@pytest.mark.parametrize("overrides", [{"steps": 2.5}, {"steps": True}, {"flag": 1}, {"dims": 3}, {"dims": ["3"]},
                                       {"kind": 1}, {"seed": True}])
def test_python_values_must_have_the_field_s_type(overrides):
    """API overrides and a run's saved config.json are not parsed from text: they are type-checked instead."""
    with pytest.raises(ConfigError, match="is not a valid"):
        apply_overrides(Cfg(), overrides)
    assert apply_overrides(Cfg(), {"lr": 1, "dims": [3], "limit": None}).lr == 1.0
