"""Tabular data: the Statlog Shuttle anomaly-detection set (from the river wheel, ``kexue data fetch shuttle``)."""

from pathlib import Path

import numpy as np

from kexue.data.cache import dataset_dir


def load_shuttle(data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Statlog Shuttle as prepared by river: 49,097 rows, 3,511 of them anomalies.

    Returns:
        float32 features ``[N, 9]`` (integer-valued, unscaled) and int64 labels ``[N]`` (1 = anomaly).
    """
    table = np.loadtxt(dataset_dir("shuttle", data_dir) / "shuttle.csv.gz", delimiter=",", skiprows=1, dtype=np.int64)
    return table[:, :9].astype(np.float32), table[:, 9]
