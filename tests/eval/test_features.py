"""Feature networks: input checks, content hash, deterministic training, and the cache (hash failures are refused)."""

import json
import warnings

import numpy as np
import pytest
import torch

from kexue.data.cache import MARKER
from kexue.data.images import save_idx
from kexue.eval import features as F
from kexue.train.checkpoint import load_tensors, save_tensors

# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def test_as_images_accepts_uint8_and_unit_floats():
    raw = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    out = F.as_images(raw.astype(np.uint8))
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.from_numpy(raw).float() / 255)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(F.as_images(x), x.float())


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 1, 28, 28) * 2 - 1, r"\[0, 1\]"),  # tanh range
    (torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.int32), "dtype"),
    (torch.rand(2, 3, 28, 28), "channel"),
    (torch.rand(2, 1, 32, 32), "28x28"),
    (torch.rand(28, 28), "shape"),
    (torch.zeros(0, 1, 28, 28), "empty"),
    (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
    ([[0.0]], "tensor"),
])
def test_as_images_rejects_bad_batches(bad, match):
    with pytest.raises(ValueError, match=match):
        F.as_images(bad, name="images")


# --------------------------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------------------------


def test_content_hash_sees_every_byte_and_name():
    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    h = F.content_hash(t)
    assert h == F.content_hash({k: v.clone() for k, v in t.items()})
    changed = {**t, "a": t["a"].clone()}
    changed["a"][1, 2] = torch.nextafter(torch.tensor(5.0), torch.tensor(6.0))  # a one-ulp change
    assert F.content_hash(changed) != h
    assert F.content_hash({"c": t["a"], "b": t["b"]}) != h  # renamed tensor
    assert F.content_hash({**t, "a": t["a"].reshape(3, 2)}) != h  # same bytes, other shape


def test_recipe_hash_and_cache_path_depend_on_every_input(tmp_path):
    base = F.recipe_hash("mnist", F.RECIPES["standard"], 0)
    assert base != F.recipe_hash("mnist", F.RECIPES["standard"], 1)
    assert base != F.recipe_hash("fashion-mnist", F.RECIPES["standard"], 0)
    assert base != F.recipe_hash("mnist", F.RECIPES["tiny"], 0)
    path = F.cache_path("mnist", "standard", 0, tmp_path)
    assert path.parent == tmp_path / F.CACHE_FOLDER and base in path.name
    with pytest.raises(ValueError, match="data="):
        F.cache_path("cifar", root=tmp_path)
    with pytest.raises(ValueError, match="recipe="):
        F.cache_path("mnist", "huge", root=tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Training (tiny, synthetic) and the cache
# --------------------------------------------------------------------------------------------------------------


def _synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is the row of a bright bar: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 255
    return images, labels.astype(np.int64)


def _tiny_recipe(**kw) -> F.FeatureNetRecipe:
    return F.FeatureNetRecipe(widths=(4, 8), feature_dim=8, epochs=1, batch_size=32, **kw)


def test_training_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    x, y = _synthetic_digits(128, 0)
    state = torch.random.get_rng_state()
    a, hist_a = F.train_feature_net(x, y, _tiny_recipe(), seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b, _ = F.train_feature_net(x, y, _tiny_recipe(), seed=3)
    c, _ = F.train_feature_net(x, y, _tiny_recipe(), seed=4)
    assert F.content_hash(a.state_dict()) == F.content_hash(b.state_dict())
    assert F.content_hash(a.state_dict()) != F.content_hash(c.state_dict())
    assert not a.training and len(hist_a) == 1 and np.isfinite(hist_a[0]["train_loss"])


def test_training_learns_a_separable_task():
    x, y = _synthetic_digits(1024, 0)
    xt, yt = _synthetic_digits(200, 1)
    recipe = F.FeatureNetRecipe(widths=(4, 8), feature_dim=8, epochs=3, batch_size=32, lr=1e-2, train_size=512)
    net, hist = F.train_feature_net(x, y, recipe, seed=0, test_images=xt, test_labels=yt)
    assert len(hist) == 3 and hist[-1]["test_accuracy"] > 0.9
    assert F.accuracy(net, F.as_images(xt), torch.from_numpy(yt)) == hist[-1]["test_accuracy"]


def test_train_rejects_mismatched_labels():
    x, y = _synthetic_digits(64, 0)
    with pytest.raises(ValueError, match="train_labels"):
        F.train_feature_net(x, y[:10], _tiny_recipe(), seed=0)


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A data cache holding a small synthetic 'mnist' set, and the tiny recipe shrunk to train in a blink."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
        images, labels = _synthetic_digits(n, seed)
        save_idx(folder / f"{split}-images-idx3-ubyte", images)
        save_idx(folder / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))
    (folder / MARKER).write_text("{}")
    monkeypatch.setitem(F.RECIPES, "tiny", _tiny_recipe())
    return tmp_path


def test_get_feature_net_trains_once_then_loads(fake_cache, monkeypatch):
    with pytest.raises(F.FeatureNetCacheError, match="eval-featurenet"):
        F.get_feature_net("mnist", "tiny", root=fake_cache, train=False)
    first = F.get_feature_net("mnist", "tiny", root=fake_cache)
    path = F.cache_path("mnist", "tiny", 0, fake_cache)
    assert path.is_file()
    prov = first.provenance
    assert prov["recipe_hash"] in path.name and len(prov["weights_sha256"]) == 64
    assert 0.0 <= prov["test_accuracy"] <= 1.0

    def no_training(*args, **kwargs):
        raise AssertionError("the cached network should have been loaded")

    monkeypatch.setattr(F, "train_feature_net", no_training)
    second = F.get_feature_net("mnist", "tiny", root=fake_cache)
    assert second.provenance["weights_sha256"] == prov["weights_sha256"]
    x = torch.rand(7, 1, 28, 28)
    torch.testing.assert_close(first.features(x), second.features(x))
    assert first.predict(x).shape == (7,) and second.probs(x).sum(1).allclose(torch.ones(7))


def _tamper(path):
    """Change one weight but keep the stored metadata (and so the stored hash): a silent corruption."""
    tensors, metadata = load_tensors(path)
    key = sorted(k for k in tensors if tensors[k].is_floating_point())[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1.0
    save_tensors(path, tensors, metadata)


def test_cache_that_fails_its_hash_is_refused_and_rebuilt(fake_cache):
    good = F.get_feature_net("mnist", "tiny", root=fake_cache)
    path = F.cache_path("mnist", "tiny", 0, fake_cache)
    _tamper(path)
    with pytest.raises(F.FeatureNetCacheError, match="content hash"):
        F.load_feature_net(path)
    with pytest.raises(F.FeatureNetCacheError, match="content hash"):
        F.get_feature_net("mnist", "tiny", root=fake_cache, train=False)
    assert path.is_file()  # train=False leaves the file where it is
    with pytest.warns(UserWarning, match="content hash"):
        rebuilt = F.get_feature_net("mnist", "tiny", root=fake_cache)
    # Deterministic training rebuilds the same weights; the bad file is kept aside, not deleted.
    assert rebuilt.provenance["weights_sha256"] == good.provenance["weights_sha256"]
    assert len(list(path.parent.glob(path.name + ".corrupt-*"))) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.load_feature_net(path)  # the rebuilt file is intact


def test_truncated_or_foreign_files_are_refused(fake_cache):
    F.get_feature_net("mnist", "tiny", root=fake_cache)
    path = F.cache_path("mnist", "tiny", 0, fake_cache)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(F.FeatureNetCacheError, match="corrupt or truncated"):
        F.load_feature_net(path)
    save_tensors(path, {"w": torch.zeros(2)}, {"other": json.dumps({})})
    with pytest.raises(F.FeatureNetCacheError, match="metadata"):
        F.load_feature_net(path)


def test_edited_metadata_is_refused(fake_cache):
    """Weights intact, but the stated recipe no longer matches its own hash: refused, never silently used."""
    F.get_feature_net("mnist", "tiny", root=fake_cache)
    path = F.cache_path("mnist", "tiny", 0, fake_cache)
    tensors, metadata = load_tensors(path)
    prov = json.loads(metadata["kexue_featurenet"])
    prov["recipe_config"]["epochs"] = 99
    save_tensors(path, tensors, {"kexue_featurenet": json.dumps(prov)})
    with pytest.raises(F.FeatureNetCacheError, match="recipe hash"):
        F.load_feature_net(path)
    with pytest.warns(UserWarning, match="recipe hash.*retraining"):
        rebuilt = F.get_feature_net("mnist", "tiny", root=fake_cache)
    assert rebuilt.provenance["recipe_config"]["epochs"] == F.RECIPES["tiny"].epochs
