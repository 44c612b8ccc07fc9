"""Image data sets as numpy arrays: IDX files (MNIST, Fashion-MNIST), image folders and the emoji set.

Loaders return uint8 pixels and int64 labels; converting to torch (and scaling) is the caller's choice.

IDX format (LeCun et al.): a 4-byte big-endian magic ``0x00 0x00 <dtype code> <number of dims>``, then one
big-endian uint32 per dimension, then the data in C order, big-endian. Image files have 3 dims (16-byte header),
label files 1 dim (8-byte header). Files may be gzipped.
"""

import gzip
import json
import struct
from pathlib import Path

import numpy as np

from kexue._progress import progress
from kexue.data.cache import dataset_dir
from kexue.errors import KexueError


class IdxFormatError(KexueError, ValueError):
    """An IDX file is truncated or not in IDX format."""


# --------------------------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
_SPLIT_FILES = {"train": "train", "test": "t10k"}  # split name -> IDX file prefix


def load_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or gzipped (detected from its first bytes, not its name).

    Returns:
        The array with the shape and dtype the header gives, in native byte order (MNIST images: uint8
        ``[N, 28, 28]``; labels: uint8 ``[N]``).

    Raises:
        IdxFormatError: bad magic number, unknown dtype code, or a data size that does not match the header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError) as err:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({err}); fetch the set again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise IdxFormatError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxFormatError(
            f"{path}: header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{len(raw) - header}; it is truncated or corrupt, fetch the set again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def save_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64, any shape) as a raw IDX file."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64"
        )
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    Path(path).write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} has neither {stem} nor {stem}.gz")


def _load_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in _SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, _SPLIT_FILES))}")
    prefix = _SPLIT_FILES[split]
    images = load_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = load_idx(_find(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxFormatError(f"{directory}: {split} images {images.shape} do not match labels {labels.shape}")
    return images, labels


def load_idx_dir(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from a folder.

    Returns:
        ``{"train": (images, labels), "test": (images, labels)}``: uint8 images ``[N, H, W]``, int64 labels ``[N]``.
    """
    return {split: _load_split(Path(directory), split) for split in _SPLIT_FILES}


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits from the data cache (``kexue data fetch mnist``).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: the cache folder (see :func:`kexue.data.cache.data_dir`).

    Returns:
        uint8 images ``[N, 28, 28]`` (0 = background) and int64 labels ``[N]`` in 0..9, in the original order.
    """
    return _cached_split("mnist", split, data_dir)


def load_fashion_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the data cache (``kexue data fetch fashion-mnist``); same layout as :func:`load_mnist`."""
    return _cached_split("fashion-mnist", split, data_dir)


def _cached_split(name: str, split: str, data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """A split of a cached 28x28, 10-class IDX set, checked: a damaged cache is one clear error, not an
    ``IndexError`` deep in training."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {', '.join(map(repr, _SPLIT_FILES))}")
    directory = dataset_dir(name, data_dir)
    hint = f"the cached copy of {name!r} is damaged: run `kexue data fetch {name} --force`"
    try:
        images, labels = _load_split(directory, split)
    except (IdxFormatError, FileNotFoundError) as err:
        raise IdxFormatError(f"{err}; {hint}") from None
    if images.shape[1:] != (28, 28) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        found = f"labels {labels.min()}..{labels.max()}" if len(labels) else "no labels"
        raise IdxFormatError(f"{directory}: {split} split must hold 28x28 images with labels 0..9, found images "
                             f"{images.shape[1:]} and {found}; {hint}")
    return images, labels


# --------------------------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _read_image(path: Path, size: int | tuple[int, int] | None, mode: str) -> np.ndarray:
    """One image as uint8 ``[H, W]`` (mode "L") or ``[H, W, 3]`` ("RGB"); transparency is composited on white."""
    from PIL import Image  # pillow comes with matplotlib; imported here so `import kexue.data` stays light

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image.alpha_composite(rgba)
        image = image.convert(mode)
        if size is not None:
            width, height = (size, size) if isinstance(size, int) else size
            # A box filter averages whole source pixels when shrinking (no ringing on flat-coloured icons).
            shrink = width <= image.width and height <= image.height
            image = image.resize((width, height), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def _stack(arrays: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = next(i for i, a in enumerate(arrays) if a.shape != arrays[0].shape)
        raise ValueError(
            f"images differ in size ({paths[0].name}: {arrays[0].shape[:2]}, {paths[first].name}: "
            f"{arrays[first].shape[:2]}); pass size= to resize them all"
        )
    return np.stack(arrays)


def load_image_folder(
    root: str | Path, size: int | tuple[int, int] | None = None, mode: str = "L"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load PNG/JPEG images from a folder, with labels from class sub-folders.

    With sub-folders, each is a class (sorted names -> 0, 1, ...) and images directly in ``root`` are ignored;
    without, every image in ``root`` gets label 0 and the single class is ``root``'s name. Files are read in sorted
    order. Transparent pixels are composited on white.

    Args:
        root: the folder.
        size: resize to ``size x size`` (int) or ``(width, height)``; ``None`` keeps the size, which must then be
            the same for every image.
        mode: ``"L"`` (grey) or ``"RGB"``.

    Returns:
        uint8 images ``[N, H, W]`` ("L") or ``[N, H, W, 3]`` ("RGB"), int64 labels ``[N]``, class names.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode={mode!r} is not one of 'L', 'RGB'")
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    folders = [root / c for c in classes] if classes else [root]
    paths, labels = [], []
    for label, folder in enumerate(folders):
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise FileNotFoundError(f"no .png/.jpg/.jpeg images in {root} or its sub-folders")
    images = _stack([_read_image(p, size, mode) for p in paths], paths)
    return images, np.asarray(labels, dtype=np.int64), classes or [root.name]


def load_emoji(
    size: int = 32, data_dir: str | Path | None = None, skin_tones: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Twitter emoji (``kexue data fetch emoji``): the offline colour-image set, composited on white.

    Args:
        size: output side in pixels (the PNGs are 64x64; 32 halves them with a box filter).
        data_dir: the cache folder.
        skin_tones: include the 1,875 skin-tone variants (near-duplicates of people emoji) besides the 1,911 base
            emoji.

    Returns:
        uint8 RGB images ``[N, size, size, 3]``, int64 category labels ``[N]`` and the sorted category names
        (10: "Activities", ..., "Travel & Places"). Order: emoji.json's ``sort_order``, each base emoji followed
        by its variants.
    """
    folder = dataset_dir("emoji", data_dir)
    entries = sorted(json.loads((folder / "emoji.json").read_text(encoding="utf-8")), key=lambda e: e["sort_order"])
    categories = sorted({e["category"] for e in entries})
    paths, labels = [], []
    for entry in entries:
        variants = [v["image"] for _, v in sorted(entry.get("skin_variations", {}).items())] if skin_tones else []
        for image in [entry["image"], *variants]:
            if (folder / "img64" / image).is_file():
                paths.append(folder / "img64" / image)
                labels.append(categories.index(entry["category"]))
    images = np.stack([_read_image(p, size, "RGB") for p in progress(paths, desc="emoji", unit="img")])
    return images, np.asarray(labels, dtype=np.int64), categories
