"""The data folder's precedence and the missing-data message."""

from pathlib import Path

import pytest

from kexue.data import cache, load_corpus, load_emoji, load_fashion_mnist, load_mnist, load_similarity
from kexue.errors import DataMissingError


@pytest.fixture(autouse=True)
def _no_process_override():
    cache.set_data_dir(None)
    yield
    cache.set_data_dir(None)


def test_precedence_override_then_set_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KEXUE_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.data_dir() == tmp_path / "home" / ".cache" / "kexue"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_dir() == tmp_path / "xdg" / "kexue"
    monkeypatch.setenv("KEXUE_DATA", str(tmp_path / "env"))
    assert cache.data_dir() == tmp_path / "env"
    cache.set_data_dir(tmp_path / "cli")
    assert cache.data_dir() == tmp_path / "cli"
    assert cache.data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    cache.set_data_dir(None)
    assert cache.data_dir() == tmp_path / "env"


def test_override_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.data_dir("~/d") == tmp_path / "d"


@pytest.mark.parametrize(
    ("load", "name"),
    [
        (lambda d: load_mnist("train", d), "mnist"),
        (lambda d: load_fashion_mnist("test", d), "fashion-mnist"),
        (lambda d: load_emoji(data_dir=d), "emoji"),
        (lambda d: load_corpus(d), "text"),
        (lambda d: load_similarity("simlex999", d), "wordsim"),
    ],
)
def test_missing_data_names_the_fetch_command(tmp_path: Path, load, name):
    with pytest.raises(DataMissingError) as err:
        load(tmp_path)
    assert f"kexue data fetch {name}" in str(err.value)
    assert "make data" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
