import json
import subprocess
import sys

import pytest

from kexue.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "init-geometry" in out and "post 5" in out
    assert main(["list", "init-geometry"]) == 0
    out = capsys.readouterr().out
    assert "pairs" in out and "quick" in out and "full" in out


def test_dry_run_prints_the_resolved_config(capsys, tmp_path):
    assert main(["run", "init-geometry", "--set", "pairs=500", "dims=3,4", "--seed", "7", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["pairs"] == 500 and cfg["dims"] == [3, 4] and cfg["seed"] == 7 and cfg["bins"] == 60
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["run", "init-geometry", "--set", "pairz=1"], "unknown key 'pairz'"),
    (["run", "init-geometry", "--set", "pairs=-1"], "out of range"),
    (["run", "init-geometry", "--set", "pairs=many"], "not a valid int"),
    (["run", "init-geometry", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "nope"], "unknown experiment 'nope'"),
    (["run", "init-geometry", "--seed", "-3"], "seed=-3 is out of range"),
    (["report", "/nonexistent/run"], "not a kexue run directory"),
])
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kexue: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_run_then_rerender_report(capsys, tmp_path):
    assert main(["--quiet", "run", "init-geometry", "--set", "pairs=300", "dims=3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    run_dir = next(tmp_path.iterdir())
    assert str(run_dir / "report.html") in out
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text().startswith("# init-geometry")


def test_help_everywhere():
    for argv in ([], ["run"], ["tour"], ["report"], ["data"], ["data", "fetch"], ["list"]):
        res = subprocess.run([sys.executable, "-m", "kexue.cli", *argv, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and "usage: kexue" in res.stdout, argv
