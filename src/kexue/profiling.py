"""Peak memory of a call, read from the torch allocator's events (benchmarks.md §1's method).

The CPU allocator keeps no high-water mark like ``torch.cuda.max_memory_allocated``, so the profiler's memory events
are summed in time order instead. Shared by the scaling experiment, the benchmarks and the tests that bound memory.
"""


def peak_bytes_many(fns: dict) -> dict:
    """Peak torch-allocator bytes allocated during each ``fn()`` on top of what was live before it.

    One CPU-profiler session (starting one costs ~0.5 s) runs every callable once inside a ``record_function``
    range; within each range the allocator events (+size on allocation, -size on free) are summed in time order and
    the maximum is kept. Frees of tensors made before the session report size 0, so inputs and earlier results do
    not count; outputs and gradients made by the call do (benchmarks.md §1). Give it fresh inputs: a tensor made
    during an earlier profiling session that a call frees would count against that call.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for i, fn in enumerate(fns.values()):
            with record_function(f"peak_bytes::{i}"):
                fn()
    events = list(prof.profiler.kineto_results.events())
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    spans = {e.name(): (e.start_ns(), e.start_ns() + e.duration_ns()) for e in events
             if e.name().startswith("peak_bytes::")}
    peaks = {}
    for i, key in enumerate(fns):
        start, end = spans[f"peak_bytes::{i}"]
        running = peak = 0
        for t, nbytes in memory:
            if start <= t <= end:
                running += nbytes
                peak = max(peak, running)
        peaks[key] = peak
    return peaks


def peak_bytes(fn) -> int:
    """Peak torch-allocator bytes allocated during ``fn()`` (see :func:`peak_bytes_many`)."""
    return peak_bytes_many({"fn": fn})["fn"]


def peak_mib(fn) -> float:
    """Peak MiB allocated during ``fn()`` (see :func:`peak_bytes_many`)."""
    return peak_bytes(fn) / 2**20
