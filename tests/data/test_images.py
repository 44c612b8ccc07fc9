"""IDX files, image folders, and (when fetched) MNIST, Fashion-MNIST and emoji."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kexue.data import (
    IdxFormatError,
    dataset_dir,
    load_emoji,
    load_fashion_mnist,
    load_idx,
    load_idx_dir,
    load_image_folder,
    load_mnist,
    save_idx,
    verify,
)
from kexue.data.cache import MARKER

# --- IDX ----------------------------------------------------------------------------------------------------------


def write_idx_by_hand(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)],
)
def test_idx_round_trip(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx_by_hand(path, array, code, compress)
    loaded = load_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded, array)
    save_idx(tmp_path / "y.idx", array)
    assert (tmp_path / "y.idx").read_bytes() == (gzip.decompress(path.read_bytes()) if compress else path.read_bytes())


def test_idx_header_sizes_match_mnist_layout(tmp_path):
    save_idx(tmp_path / "images", np.zeros((2, 28, 28), np.uint8))
    save_idx(tmp_path / "labels", np.zeros(2, np.uint8))
    assert (tmp_path / "images").stat().st_size == 16 + 2 * 28 * 28
    assert (tmp_path / "labels").stat().st_size == 8 + 2


def test_truncated_or_corrupt_idx_raises(tmp_path):
    save_idx(tmp_path / "full", np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    raw = (tmp_path / "full").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-7])
    with pytest.raises(IdxFormatError, match="truncated"):
        load_idx(tmp_path / "short")
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw)[:-9])
    with pytest.raises(IdxFormatError, match="truncated"):
        load_idx(tmp_path / "short.gz")
    (tmp_path / "header").write_bytes(raw[:9])
    with pytest.raises(IdxFormatError, match="header"):
        load_idx(tmp_path / "header")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        load_idx(tmp_path / "magic")
    with pytest.raises(ValueError, match="dtype"):
        save_idx(tmp_path / "bad", np.zeros(3, np.uint64))


def test_load_idx_dir_finds_raw_and_gz(tmp_path):
    rng = np.random.default_rng(1)
    train, test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    save_idx(tmp_path / "train-images-idx3-ubyte", train)
    save_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    write_idx_by_hand(tmp_path / "t10k-images-idx3-ubyte.gz", test, 0x08, compress=True)
    write_idx_by_hand(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 9], np.uint8), 0x08, compress=True)
    splits = load_idx_dir(tmp_path)
    np.testing.assert_array_equal(splits["train"][0], train)
    np.testing.assert_array_equal(splits["test"][0], test)
    assert splits["train"][1].dtype == np.int64 and splits["test"][1].tolist() == [7, 9]


def test_bad_split_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"split='valid'.*'train', 'test'"):
        load_mnist("valid", data_dir=tmp_path)


@pytest.mark.parametrize("labels, images, message", [
    ([3, 255], (2, 28, 28), r"labels 0\.\.9, found images \(28, 28\) and labels 3\.\.255"),
    ([3, 4], (2, 14, 14), r"found images \(14, 14\)"),
])
def test_a_damaged_cached_set_is_one_clear_error(tmp_path, labels, images, message):
    """Labels out of range in the cache would be an IndexError deep in training; the loader names the fix."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    save_idx(folder / "t10k-images-idx3-ubyte", np.zeros(images, np.uint8))
    save_idx(folder / "t10k-labels-idx1-ubyte", np.array(labels, np.uint8))
    with pytest.raises(IdxFormatError, match=message + r".*kexue data fetch mnist --force"):
        load_mnist("test", data_dir=tmp_path)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08")  # truncated header
    with pytest.raises(IdxFormatError, match=r"kexue data fetch mnist --force"):
        load_mnist("test", data_dir=tmp_path)


# --- image folders ------------------------------------------------------------------------------------------------


def test_flat_folder_grey(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((4, 5), 10 * i + 1, np.uint8), mode="L").save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    images, labels, classes = load_image_folder(tmp_path)
    assert images.shape == (3, 4, 5) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0, 0], [1, 11, 21])
    assert labels.tolist() == [0, 0, 0] and labels.dtype == np.int64 and classes == [tmp_path.name]


def test_class_folders_rgb_and_alpha_on_white(tmp_path):
    colours = {"zebra": (255, 0, 0), "ant": (0, 0, 255)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for j in range(2):
            Image.new("RGB", (3, 3), colour).save(tmp_path / name / f"{j}.png")
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[0, 0] = (0, 255, 0, 255)  # one opaque green pixel, the rest fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "ant" / "2.png")
    images, labels, classes = load_image_folder(tmp_path, mode="RGB")
    assert classes == ["ant", "zebra"] and labels.tolist() == [0, 0, 0, 1, 1]
    assert images.shape == (5, 3, 3, 3)
    np.testing.assert_array_equal(images[0, 1, 1], colours["ant"])
    np.testing.assert_array_equal(images[3, 2, 2], colours["zebra"])
    np.testing.assert_array_equal(images[2, 0, 0], (0, 255, 0))
    np.testing.assert_array_equal(images[2, 1, 1], (255, 255, 255))


def test_mixed_sizes_need_size(tmp_path):
    Image.new("L", (4, 4), 50).save(tmp_path / "a.png")
    Image.new("L", (8, 6), 50).save(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="size="):
        load_image_folder(tmp_path)
    images, _, _ = load_image_folder(tmp_path, size=2)
    assert images.shape == (2, 2, 2)
    assert np.abs(images.astype(int) - 50).max() <= 2  # a flat image stays flat (JPEG may shift a level or two)


def test_empty_folder_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        load_image_folder(tmp_path, mode="CMYK")


# --- fetched sets -------------------------------------------------------------------------------------------------


def test_mnist(requires):
    requires("mnist")
    x, y = load_mnist("train")
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    x_test, y_test = load_mnist("test")
    assert x_test.shape == (10_000, 28, 28)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = (dataset_dir("mnist") / "train-images-idx3-ubyte").read_bytes()
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
    assert 30 < x.mean() < 36  # MNIST's mean pixel is 33.3
    verify("mnist")


def test_fashion_mnist(requires):
    requires("fashion-mnist")
    x, y = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    assert x.shape == (60_000, 28, 28) and x_test.shape == (10_000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(y_test).tolist() == [1000] * 10


def test_emoji(requires):
    requires("emoji")
    images, labels, categories = load_emoji(size=32, skin_tones=False)
    assert images.shape == (1911, 32, 32, 3) and images.dtype == np.uint8
    assert len(categories) == 10 and "Smileys & Emotion" in categories
    assert np.bincount(labels).tolist()[categories.index("Flags")] == 270
    # Most corners are transparent in the PNGs: composited on white they are pure white, not black.
    assert (images[:, 0, 0] == 255).all(axis=-1).mean() > 0.8
