"""Reference values: written atomically per (recipe, seed), read back unchanged, absent before the first run."""

import pytest

from kexue.eval import reference as R


def test_round_trip_and_absence(tmp_path):
    assert R.load_reference("standard", 0, tmp_path) is None
    values = {"mnist/images/train (real)": {"fid": 1.5, "provenance": {"num_real": 10}}, "seed": 0}
    path = R.save_reference(values, "standard", 0, tmp_path)
    assert path == tmp_path / R.FOLDER / "reference-standard-s0.json"
    assert R.load_reference("standard", 0, tmp_path) == values
    assert R.load_reference("tiny", 0, tmp_path) is None  # a smoke run never shadows the real values
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    with pytest.raises(ValueError, match="recipe"):
        R.reference_path("../x", 0, tmp_path)
