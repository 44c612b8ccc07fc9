"""The allocator-peak probe (kexue.profiling) and the scaling experiment's crossover interpolation."""

import math

import torch

from kexue.experiments.attention_scaling import _crossover
from kexue.profiling import peak_bytes, peak_bytes_many


def test_peak_bytes_counts_what_the_call_allocates():
    a = torch.randn(300, 200)
    one = 300 * 300 * 4

    def two_live():  # two results alive at once, then both freed
        x = a @ a.T
        y = a @ a.T
        return x.sum() + y.sum()

    def one_at_a_time():
        for _ in range(3):
            (a @ a.T).sum()

    assert peak_bytes(lambda: a @ a.T) == one
    peaks = peak_bytes_many({"two": two_live, "one": one_at_a_time})
    assert 2 * one <= peaks["two"] < 2 * one + 4096  # plus a few scalars
    assert one <= peaks["one"] < one + 4096


def test_crossover_interpolates_in_log_log():
    ns = [256, 512, 1024, 2048]
    # Linear / SDPA time ratio halves per doubling of N from 2 at 256: it crosses 1 at N = 512 exactly.
    assert math.isclose(_crossover(ns, [2.0, 1.0, 0.5, 0.25]), 512.0)
    assert math.isclose(_crossover(ns, [4.0, 2.0, 0.5, 0.25]), 2 ** (9 + 0.5))  # between 512 and 1024
    assert _crossover(ns, [0.9, 0.5, 0.4, 0.1]) == 256  # faster everywhere measured
    assert math.isnan(_crossover(ns, [3.0, 2.0, 1.5, 1.2]))  # never faster
    assert _crossover(ns, [0.5, 2.0, 0.8, 0.5]) > 512  # a lucky win at the shortest N does not count
