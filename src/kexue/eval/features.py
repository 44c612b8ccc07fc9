"""Feature networks for offline image metrics: trained locally, cached with a content hash, loaded safely.

Why: FID, KID and precision/recall need a fixed feature network. The peers download Inception-v3 at run time
(``wasserstein-wgan.md`` §7.4), which fails offline; MNIST-scale papers train a small classifier instead (MEG's
``classifier_mnist.py``). kexue does the same, once, and keeps the weights in the data cache:

- ``get_feature_net("mnist")`` loads ``<data cache>/featurenets/mnist-standard-s0-<recipe hash>.safetensors``, or
  trains it on first need (about 2–3 minutes on 2 CPU cores) and writes it atomically.
- The file name carries a hash of the *recipe* (data set, architecture, optimiser, epochs, seed), so a changed
  recipe never loads an old net. The file's metadata carries a sha256 of the *weights*; a file that fails it is
  refused with :class:`FeatureNetCacheError`, moved aside (never deleted) and rebuilt, never silently used.
- Training is deterministic for a seed on a given machine and thread count (explicit generators for the
  initialisation, the shuffling and dropout; no data-loader workers).
- :class:`FeatureNet` wraps the network with its provenance (recipe, hash, test accuracy), which every metric record
  copies, so a score can always be traced to the exact weights that produced it.
"""

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kexue._progress import progress
from kexue.data.cache import data_dir
from kexue.errors import KexueError
from kexue.models.classifier import FeatureCNN
from kexue.train.checkpoint import load_tensors, save_tensors

FORMAT = 1  # bump when the file layout or the training code changes in a way that alters the weights
DATASETS = ("mnist", "fashion-mnist")
CACHE_FOLDER = "featurenets"


class FeatureNetCacheError(KexueError):
    """A cached feature network is missing, corrupt, or fails its content hash."""


# --------------------------------------------------------------------------------------------------------------
# Input checks shared by every image metric
# --------------------------------------------------------------------------------------------------------------


def as_images(images: Any, *, channels: int | None = 1, size: int | None = 28, name: str = "images") -> torch.Tensor:
    """Check an image batch and return it as float32 ``[N, C, H, W]`` in [0, 1], on the CPU.

    Accepted: a torch tensor or numpy array, either uint8 in 0..255 (divided by 255) or floating point already in
    [0, 1]; shape ``[N, C, H, W]``, or ``[N, H, W]`` for single-channel images. Anything else is an error: floats
    outside [0, 1] (a generator's tanh output must be mapped with ``(x + 1) / 2`` by the caller, since guessing
    the range would hide a bug), other dtypes, NaNs, a wrong channel count or size, or an empty batch.

    Args:
        images: the batch.
        channels: required channel count, or ``None`` for any.
        size: required height = width, or ``None`` for any.
        name: the argument's name, used in error messages.

    Raises:
        ValueError: naming ``name`` and what was expected.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(images).__name__}")
    if images.dim() == 3 and channels in (1, None):
        images = images.unsqueeze(1)  # [N, H, W] -> [N, 1, H, W]
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape [N, C, H, W] (or [N, H, W] for grey images), got "
                         f"{tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError(f"{name} is an empty batch")
    if channels is not None and c != channels:
        raise ValueError(f"{name} must have {channels} channel(s), got shape {tuple(images.shape)}")
    if size is not None and (h, w) != (size, size):
        raise ValueError(f"{name} must be {size}x{size} images, got {h}x{w}")
    if images.dtype == torch.uint8:
        return images.cpu().float().div_(255)
    if not images.is_floating_point():
        raise ValueError(f"{name} must be uint8 (0..255) or floating point in [0, 1], got dtype {images.dtype}")
    images = images.detach().cpu().float()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (float) or 0..255 (uint8); got values in [{lo:.4g}, {hi:.4g}]"
                         f" (map tanh outputs with (x + 1) / 2)")
    return images


# --------------------------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureNetRecipe:
    """How a feature network is built and trained; its hash names the cache file."""

    widths: tuple[int, ...] = (16, 32, 64)  # conv block channels (each block halves the image)
    feature_dim: int = 128  # penultimate feature size: the space FID/KID/PR live in
    dropout: float = 0.2  # on the features, during training only
    epochs: int = 3  # passes over the training set
    batch_size: int = 128  # images per step
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    train_size: int | None = None  # use the first N training images; None = all 60,000


RECIPES: dict[str, FeatureNetRecipe] = {
    # ≥ 99.0% MNIST test accuracy in about 2–3 CPU-minutes.
    "standard": FeatureNetRecipe(),
    # Seconds to train; for smoke tests and examples only, its scores are not meaningful.
    "tiny": FeatureNetRecipe(widths=(8, 16, 16), feature_dim=32, epochs=1, batch_size=64, train_size=2048),
}


def recipe_hash(data: str, recipe: FeatureNetRecipe, seed: int) -> str:
    """16 hex digits identifying (format, data set, recipe, seed): equal hashes mean the same training run."""
    blob = json.dumps({"format": FORMAT, "data": data, "seed": seed, "model": "FeatureCNN",
                       "recipe": dataclasses.asdict(recipe)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (in name order): the identity of the weights."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_path(data: str, recipe: str = "standard", seed: int = 0, root: str | Path | None = None) -> Path:
    """Where the feature network for ``(data, recipe, seed)`` is cached, inside the data cache ``root``."""
    _check_choice(data, DATASETS, "data")
    _check_choice(recipe, tuple(RECIPES), "recipe")
    name = f"{data}-{recipe}-s{seed}-{recipe_hash(data, RECIPES[recipe], seed)}.safetensors"
    return data_dir(root) / CACHE_FOLDER / name


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of: {', '.join(choices)}")


# --------------------------------------------------------------------------------------------------------------
# The wrapped network
# --------------------------------------------------------------------------------------------------------------


class FeatureNet:
    """A trained :class:`FeatureCNN` in eval mode plus its provenance.

    Attributes:
        net: the network (eval mode, on ``device``).
        provenance: ``{"feature_net", "data", "recipe", "seed", "recipe_hash", "weights_sha256", "test_accuracy",
            ...}``; copied into every metric record.
    """

    def __init__(self, net: FeatureCNN, provenance: dict[str, Any]) -> None:
        self.net = net.eval()
        self.provenance = dict(provenance)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def num_features(self) -> int:
        return self.net.num_features

    def to(self, device: str | torch.device) -> "FeatureNet":
        self.net.to(device)
        return self

    @torch.no_grad()
    def _batched(self, fn: Callable[[torch.Tensor], torch.Tensor], images: Any, batch_size: int,
                 name: str) -> torch.Tensor:
        x = as_images(images, channels=self.net.in_channels, size=self.net.image_size, name=name)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        outs = [fn(x[i:i + batch_size].to(self.device)).float().cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(outs)

    def features(self, images: Any, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate features ``[N, num_features]`` (float32, CPU) of images (see :func:`as_images`)."""
        return self._batched(self.net.features, images, batch_size, "images")

    def logits(self, images: Any, batch_size: int = 1000) -> torch.Tensor:
        """Class logits ``[N, num_classes]`` (float32, CPU)."""
        return self._batched(self.net, images, batch_size, "images")

    def probs(self, images: Any, batch_size: int = 1000) -> torch.Tensor:
        """Softmax class probabilities ``[N, num_classes]``."""
        return self.logits(images, batch_size).softmax(-1)

    def predict(self, images: Any, batch_size: int = 1000) -> torch.Tensor:
        """Predicted labels ``[N]`` (int64)."""
        return self.logits(images, batch_size).argmax(-1)


def _build(recipe: FeatureNetRecipe) -> FeatureCNN:
    return FeatureCNN(widths=recipe.widths, feature_dim=recipe.feature_dim, dropout=recipe.dropout)


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def accuracy(net: FeatureCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` (put in eval mode) on images ``[N, 1, 28, 28]`` in [0, 1] and labels ``[N]``."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = net(images[i:i + batch_size].to(device)).argmax(-1).cpu()
        correct += (pred == labels[i:i + batch_size]).sum().item()
    return correct / len(images)


def train_feature_net(train_images: Any, train_labels: Any, recipe: FeatureNetRecipe, seed: int = 0, *,
                      test_images: Any = None, test_labels: Any = None, device: str | torch.device = "cpu",
                      log: Callable[..., None] | None = None, desc: str = "feature net") -> tuple[FeatureCNN, list]:
    """Train a :class:`FeatureCNN` with cross-entropy, AdamW and a one-cycle learning rate.

    Deterministic for ``seed`` on a given machine: the initialisation, the shuffling and dropout all draw from
    generators seeded here, and nothing else is random.

    Args:
        train_images: uint8 ``[N, 28, 28]`` or float ``[N, 1, 28, 28]`` in [0, 1].
        train_labels: int ``[N]`` in 0..9.
        recipe: architecture and optimiser settings; ``recipe.train_size`` keeps the first N images.
        seed: the seed of this training run.
        test_images, test_labels: optional held-out set, scored after each epoch.
        device: where to train.
        log: called as ``log(step=epoch, train_loss=..., test_accuracy=...)`` after each epoch.
        desc: progress-bar label.

    Returns:
        The network in eval mode, and the per-epoch history (a list of dicts).
    """
    x = as_images(train_images, name="train_images")
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    if y.shape != (len(x),):
        raise ValueError(f"train_labels must have shape [{len(x)}], got {tuple(y.shape)}")
    if recipe.train_size is not None:
        x, y = x[:recipe.train_size], y[:recipe.train_size]
    has_test = test_images is not None
    if has_test:
        xt = as_images(test_images, name="test_images")
        yt = torch.as_tensor(np.asarray(test_labels), dtype=torch.int64)

    device = torch.device(device)
    # Dropout draws from the global generator: fork it, so training is seeded here and the caller's RNG state is
    # left as it was.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train(x, y, (xt, yt) if has_test else None, recipe, seed, device, log, desc)


def _train(x: torch.Tensor, y: torch.Tensor, test: tuple | None, recipe: FeatureNetRecipe, seed: int,
           device: torch.device, log: Callable[..., None] | None, desc: str) -> tuple[FeatureCNN, list]:
    net = _build(recipe).to(device)
    shuffle = torch.Generator().manual_seed(seed + 1)
    steps_per_epoch = max(1, len(x) // recipe.batch_size)  # drop the last partial batch: batch norm needs > 1
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                pct_start=0.2)
    history = []
    bar = progress(total=recipe.epochs * steps_per_epoch, desc=desc, unit="step")
    for epoch in range(1, recipe.epochs + 1):
        net.train()
        perm = torch.randperm(len(x), generator=shuffle)
        total, count = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            loss = F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            count += 1
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        record = {"epoch": epoch, "train_loss": total / count}
        if test is not None:
            record["test_accuracy"] = accuracy(net, *test)
        history.append(record)
        if log is not None:
            log(step=epoch, **{k: v for k, v in record.items() if k != "epoch"})
    bar.close()
    return net.eval(), history


# --------------------------------------------------------------------------------------------------------------
# Cache: save, load (with the content hash check), get-or-train
# --------------------------------------------------------------------------------------------------------------


def save_feature_net(path: str | Path, net: FeatureCNN, provenance: dict[str, Any]) -> FeatureNet:
    """Write ``net`` atomically to ``path`` with its provenance and weights hash in the metadata.

    Returns:
        The :class:`FeatureNet` for the saved weights, its provenance completed with ``weights_sha256``.
    """
    tensors = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    provenance = {**provenance, "weights_sha256": content_hash(tensors)}
    save_tensors(path, tensors, metadata={"kexue_featurenet": json.dumps(provenance, sort_keys=True)})
    return FeatureNet(net, provenance)


def load_feature_net(path: str | Path, device: str | torch.device = "cpu") -> FeatureNet:
    """Load a cached feature network and check its weights against the hash stored with them.

    Raises:
        FeatureNetCacheError: the file is missing, unreadable, lacks kexue's metadata, or its weights do not hash
            to the stored value (it was modified or corrupted).
    """
    path = Path(path)
    try:
        tensors, metadata = load_tensors(path)
    except KexueError as err:
        raise FeatureNetCacheError(f"feature net cache {path}: {err}") from None
    try:
        provenance = json.loads(metadata["kexue_featurenet"])
        recipe = FeatureNetRecipe(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in provenance["recipe_config"].items()})
        expected = provenance["weights_sha256"]
        stated_recipe = recipe_hash(provenance["data"], recipe, provenance["seed"])
    except (KeyError, TypeError, ValueError) as err:
        raise FeatureNetCacheError(f"feature net cache {path} has no valid kexue metadata ({err})") from None
    if provenance.get("recipe_hash") != stated_recipe:
        raise FeatureNetCacheError(f"feature net cache {path}: its metadata names recipe hash "
                                   f"{provenance.get('recipe_hash')} but its recipe hashes to {stated_recipe} (an "
                                   "older file format or edited metadata)")
    actual = content_hash(tensors)
    if actual != expected:
        raise FeatureNetCacheError(f"feature net cache {path} fails its content hash (stored {expected[:12]}…, "
                                   f"weights hash to {actual[:12]}…): the file was modified or corrupted")
    net = _build(recipe)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise FeatureNetCacheError(f"feature net cache {path} does not match its recipe: {err}") from None
    return FeatureNet(net.to(device), provenance)


def _load_data(data: str, root: str | Path | None) -> tuple[tuple, tuple]:
    from kexue.data.images import load_fashion_mnist, load_mnist  # the data layer, only when training is needed

    loader = load_mnist if data == "mnist" else load_fashion_mnist
    return loader("train", data_dir=root), loader("test", data_dir=root)


def build_feature_net(data: str, recipe: str = "standard", seed: int = 0, *, root: str | Path | None = None,
                      device: str | torch.device = "cpu", log: Callable[..., None] | None = None) -> FeatureNet:
    """Train the feature network for ``(data, recipe, seed)`` and write it to :func:`cache_path` (atomically).

    An existing file at that path is replaced: call this only to (re)build, or use :func:`get_feature_net`.
    """
    path = cache_path(data, recipe, seed, root)
    (x, y), (xt, yt) = _load_data(data, root)
    cfg = RECIPES[recipe]
    start = time.time()
    net, history = train_feature_net(x, y, cfg, seed, test_images=xt, test_labels=yt, device=device, log=log,
                                     desc=f"feature net {data}")
    seconds = time.time() - start
    provenance = {
        "feature_net": f"{data}-{recipe}-s{seed}",
        "data": data,
        "recipe": recipe,
        "recipe_config": dataclasses.asdict(cfg),
        "recipe_hash": recipe_hash(data, cfg, seed),
        "seed": seed,
        "format": FORMAT,
        "test_accuracy": history[-1]["test_accuracy"],
        "history": history,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return save_feature_net(path, net.cpu(), provenance).to(device)


def get_feature_net(data: str = "mnist", recipe: str = "standard", seed: int = 0, *, root: str | Path | None = None,
                    device: str | torch.device = "cpu", train: bool = True,
                    log: Callable[..., None] | None = None) -> FeatureNet:
    """The feature network for ``data``: from the cache if it is there and intact, else trained now (first need).

    A cached file that fails its content hash is never used: it is renamed to ``<name>.corrupt-<time>`` (kept for
    inspection, not deleted), a warning says so, and the network is rebuilt (or, with ``train=False``, the error is
    raised).

    Args:
        data: ``"mnist"`` or ``"fashion-mnist"``.
        recipe: a key of :data:`RECIPES` (``"standard"``; ``"tiny"`` only for smoke tests).
        seed: the training seed (part of the cache key).
        root: the data cache folder (default: :func:`kexue.data.cache.data_dir`).
        device: where the returned network lives.
        train: train when missing or corrupt; ``False`` raises :class:`FeatureNetCacheError` instead.
        log: per-epoch callback if training happens (see :func:`train_feature_net`).

    Raises:
        FeatureNetCacheError: ``train=False`` and the cache is missing or corrupt.
        DataMissingError: training is needed but the data set was not fetched.
    """
    path = cache_path(data, recipe, seed, root)
    if path.is_file():
        try:
            net = load_feature_net(path, device)
            wanted = recipe_hash(data, RECIPES[recipe], seed)
            if net.provenance["recipe_hash"] != wanted:
                raise FeatureNetCacheError(f"feature net cache {path} was trained with recipe hash "
                                           f"{net.provenance['recipe_hash']}, not the requested {wanted}")
            return net
        except FeatureNetCacheError as err:
            if not train:
                raise FeatureNetCacheError(f"{err}; rebuild it with `kexue run eval-featurenet --set data={data}`") \
                    from None
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}-{os.getpid()}")
            os.replace(path, aside)
            warnings.warn(f"{err}; moved it to {aside.name} and retraining", stacklevel=2)
    elif not train:
        raise FeatureNetCacheError(f"no cached {data} feature net at {path}; build it with "
                                   f"`kexue run eval-featurenet --set data={data}`")
    return build_feature_net(data, recipe, seed, root=root, device=device, log=log)


def describe(net: FeatureNet) -> str:
    """One line for reports: ``mnist-standard-s0 (weights 1a2b3c4d5e6f, test acc 99.31%)``."""
    p = net.provenance
    acc = p.get("test_accuracy")
    acc_text = f", test acc {100 * acc:.2f}%" if isinstance(acc, float) and math.isfinite(acc) else ""
    return f"{p.get('feature_net', '?')} (weights {p.get('weights_sha256', '?')[:12]}{acc_text})"
