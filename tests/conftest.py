"""Shared fixtures: a fixed seed for every test, one thread on request, a torchrun launcher, and skipping GPU tests
without CUDA."""

import os
import signal
import subprocess
import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """For modules of tiny tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``): a 2-thread OpenMP region
    costs more than it computes there, and on a busy machine a descheduled thread stalls every region."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Launcher:
    """Runs Python (``python ...``) or ``torchrun --standalone --nproc_per_node N ...`` in a folder, one OpenMP
    thread per process, each in a new session so that a hang kills torchrun's workers too, not only torchrun."""

    def __init__(self, cwd) -> None:
        self.cwd = cwd

    def start(self, *args: str, nproc: int | None = None) -> subprocess.Popen:
        """``python args`` or, with ``nproc``, ``torchrun args`` on ``nproc`` processes; returns at once."""
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("WORLD_SIZE", None)
        return subprocess.Popen([sys.executable, *launcher, *map(str, args)], cwd=self.cwd, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def finish(self, proc: subprocess.Popen, timeout: float = 90) -> str:
        """Wait for ``proc`` (killing its whole session on timeout), check it succeeded, and return its output."""
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        assert proc.returncode == 0, out[-5000:]
        return out

    def run(self, *args: str, nproc: int | None = None, timeout: float = 90) -> str:
        return self.finish(self.start(*args, nproc=nproc), timeout)


@pytest.fixture
def launcher(tmp_path) -> Launcher:
    """Starts ``python`` / ``torchrun`` processes in ``tmp_path`` (see :class:`Launcher`)."""
    return Launcher(tmp_path)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
