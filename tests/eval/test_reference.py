"""Reference values: written atomically per (recipe, seed), read back unchanged, filtered to what is comparable."""

import pytest

from kexue.eval import reference as R


def _image_record(fid: float, sha: str, n: int) -> dict:
    return {"fid": fid, "precision": 0.9, "provenance": {"weights_sha256": sha, "num_fake": n, "num_real": n}}


VALUES = {
    "seed": 0,
    f"mnist/images/{R.REAL}": _image_record(1.5, "aaa", 1000),
    "mnist/images/one class only": _image_record(80.0, "aaa", 1000),
    "mnist/images-extra/x": _image_record(9.0, "aaa", 1000),  # a different section that shares the prefix text
    "fashion-mnist/images/train (real)": _image_record(2.5, "bbb", 1000),
    "stacked-mnist/real stacks": {"modes_covered": 1000, "num_samples": 26000,
                                  "provenance": {"weights_sha256": "aaa"}},
    "mixture-25/true samples": {"modes_covered": 25, "num_samples": 10000, "provenance": {"std": 0.01}},
}


def test_round_trip_and_absence(tmp_path):
    assert R.load_reference("standard", 0, tmp_path) is None
    path = R.save_reference(VALUES, "standard", 0, tmp_path)
    assert path == tmp_path / R.FOLDER / "reference-standard-s0.json"
    assert R.load_reference("standard", 0, tmp_path) == VALUES
    assert R.load_reference("tiny", 0, tmp_path) is None  # a smoke run never shadows the real values
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    with pytest.raises(ValueError, match="recipe"):
        R.reference_path("../x", 0, tmp_path)
    # A later run over one section replaces its keys and keeps the rest; merge=False replaces the file.
    R.save_reference({"mnist/images/one class only": {"fid": 7.0}}, "standard", 0, tmp_path)
    merged = R.load_reference("standard", 0, tmp_path)
    assert merged["mnist/images/one class only"] == {"fid": 7.0} and merged["seed"] == 0 and len(merged) == len(VALUES)
    R.save_reference({"seed": 1}, "standard", 0, tmp_path, merge=False)
    assert R.load_reference("standard", 0, tmp_path) == {"seed": 1}
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"not valid JSON.*eval-reference"):
        R.load_reference("standard", 0, tmp_path)


def test_entries_keep_only_comparable_records(tmp_path):
    R.save_reference(VALUES, "standard", 0, tmp_path)
    kw = {"root": tmp_path}
    assert set(R.reference_entries("mnist/images", **kw)) == {R.REAL, "one class only"}
    assert set(R.reference_entries("mnist/images", weights_sha256="aaa", num_samples=1000, **kw)) == {
        R.REAL, "one class only"}
    assert R.reference_entries("mnist/images", weights_sha256="other", **kw) == {}
    assert R.reference_entries("mnist/images", num_samples=500, **kw) == {}
    # Records that do not depend on a feature network are not filtered by its hash.
    assert set(R.reference_entries("mixture-25", weights_sha256="zzz", **kw)) == {"true samples"}
    assert R.reference_entries("stacked-mnist", weights_sha256="zzz", **kw) == {}
    with pytest.raises(ValueError, match="section"):
        R.reference_entries("", **kw)


def test_rows_and_status(tmp_path):
    assert "No reference values yet" in R.reference_status("mnist/images", root=tmp_path)
    assert R.reference_rows("mnist/images", ("fid",), root=tmp_path) == []
    R.save_reference(VALUES, "standard", 0, tmp_path)
    rows = R.reference_rows("mnist/images", ("fid", "precision", "kid"), weights_sha256="aaa", root=tmp_path)
    assert rows == [[f"reference: {R.REAL}", 1.5, 0.9, "–"], ["reference: one class only", 80.0, 0.9, "–"]]
    ok = R.reference_status("mnist/images", weights_sha256="aaa", num_samples=1000, root=tmp_path)
    assert "aaa" in ok and "1000 samples" in ok
    mismatch = R.reference_status("mnist/images", weights_sha256="ccc", num_samples=1000, root=tmp_path)
    assert "not comparable" in mismatch and "aaa" in mismatch and "ccc" in mismatch
    assert "no section 'cifar/images'" in R.reference_status("cifar/images", root=tmp_path)
