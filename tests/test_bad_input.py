"""Bad input at the command line: exit code 2, one line on stderr naming the argument, no traceback, nothing created.

Each row was a traceback, a misleading line or a silent acceptance before (see the comment beside it).
"""

import json

import pytest

from kexue.cli import main
from kexue.data.cache import set_data_dir
from kexue.experiments.runner import run_experiment


@pytest.fixture(autouse=True)
def _default_data_dir():
    yield
    set_data_dir(None)  # --data-dir sets it for the process


@pytest.fixture
def paths(tmp_path):
    """A file, a folder kexue did not create (with a config.json), and a small finished run to damage."""
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "report.md").write_text("the user's own notes")
    return {"file": file, "foreign": foreign, "out": tmp_path / "runs"}


def _damaged_run(tmp_path, name: str, content: str):
    run = run_experiment("init-geometry", overrides={"pairs": "300", "dims": "3"}, out=tmp_path / "done",
                         argv=["test"])
    (run.path / name).write_text(content)
    return run.path


CASES = [
    # --out and --data-dir (were FileExistsError, NotADirectoryError, or "not in the data folder")
    (["run", "init-geometry", "--out", "{file}"], "--out"),
    (["run", "init-geometry", "--out", "{file}/sub"], "--out"),
    (["tour", "--only", "init-geometry", "--out", "{file}"], "--out"),
    (["--data-dir", "{file}", "data", "list"], "--data-dir"),
    (["--data-dir", "{file}", "data", "fetch", "mnist"], "--data-dir"),
    (["--data-dir", "{file}/sub", "run", "ema-mnist", "--out", "{out}"], "--data-dir"),
    # values that pass range checks but are not usable (were silent, or a traceback inside the run)
    (["run", "ema-mnist", "--set", "lr=nan", "--out", "{out}"], "lr=nan"),
    (["run", "ema-mnist", "--set", "lr=inf", "--out", "{out}"], "lr=inf"),
    (["run", "ema-mnist", "--set", "decays=", "--out", "{out}"], "decays"),
    (["run", "ema-mnist", "--set", "train_subset=10", "--out", "{out}"], "train_subset=10"),  # IndexError
    (["run", "nvae-mnist", "--set", "train_subset=10", "--out", "{out}"], "train_subset=10"),  # ZeroDivisionError
    (["run", "init-geometry", "--seed", str(2**32), "--out", "{out}"], "seed"),  # was taken modulo 2**32
    (["run", "attention-copy", "--set", "dim=21", "heads=2", "--out", "{out}"], "dim=21"),  # 21-line traceback
    (["run", "attention-mnist", "--set", "heads=3", "--out", "{out}"], "heads=3"),
    (["run", "init-geometry", "--resume", "{file}", "--out", "{out}"], "cannot resume"),
    # a tour with a preset some experiment lacks (left a folder whose index reloaded forever)
    (["tour", "--preset", "nope", "--out", "{out}"], "preset 'nope'"),
    # kexue report only on kexue runs (overwrote report.md in any folder with a config.json)
    (["report", "{foreign}"], "not a kexue run directory"),
    # argparse's own errors (were the usage, wrapped over several lines, then the error)
    (["run", "init-geometry", "--seed", "abc", "--out", "{out}"], "--seed"),
    (["run", "init-geometry", "--device", "tpu", "--out", "{out}"], "--device"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(c[0][:4]) for c in CASES])
def test_bad_input_is_one_line_naming_the_argument(argv, needle, paths, capsys):
    argv = [a.format(**paths) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kexue") and ": error: " in err and err.count("\n") == 1, err
    assert "Traceback" not in err and needle in err, err
    assert not paths["out"].exists()  # nothing created
    assert (paths["foreign"] / "report.md").read_text() == "the user's own notes"
    assert not (paths["foreign"] / "report.html").exists()


@pytest.mark.parametrize("name, content, needle", [
    ("metrics.jsonl", '{"step": 1}\nnot json\n{"step": 2}\n', "metrics.jsonl has 1 line(s) that are not JSON"),
    ("config.json", '{"experiment": "init-geo', "config.json is not valid JSON"),
    ("summary.json", "[1, 2]", "summary.json holds a JSON list, expected a dict"),
    ("summary.json", '{"acc": 3}', "summary.json holds '3', which kexue did not write there"),
    ("report.json", '[{"type": "figure"}]', "report.json holds \"{'type': 'figure'}\""),  # was a KeyError
])
def test_report_on_a_damaged_run_is_one_line(tmp_path, capsys, name, content, needle):
    path = _damaged_run(tmp_path, name, content)
    before = (path / "report.html").read_bytes()
    capsys.readouterr()
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    assert (path / "report.html").read_bytes() == before


def test_report_skips_a_torn_last_line_and_writes_atomically(tmp_path, capsys):
    path = _damaged_run(tmp_path, "argv.txt", "test\n")
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 9, "lo')  # a crash during an append
    assert main(["report", str(path)]) == 0
    assert sorted(p.name for p in path.iterdir() if "tmp" in p.name) == []
    status = json.loads((path / "status.json").read_text())
    assert status["status"] == "done" and status["format"] == "kexue-run/1"


def test_an_unwritable_out_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """(As root every folder is writable, so the permission check itself is made to say no.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert main(["run", "init-geometry", "--out", str(locked)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "is not writable" in err
    assert list(locked.iterdir()) == []
