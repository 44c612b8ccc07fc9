"""eval-featurenet: train (or load) the local feature network that kexue's FID / KID / precision-recall use.

The GAN and VAE posts (1, 2, 3, 7) report image metrics on the penultimate features of a small classifier trained
here, offline, instead of a downloaded Inception-v3 (``wasserstein-wgan.md`` §7.4). This run builds the network for
one data set if the data cache does not hold it yet (it is also built on first need by any experiment that scores
images), checks its test accuracy against the bar, and shows what its feature space looks like.
"""

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from kexue.eval.features import (
    RECIPES,
    FeatureNetCacheError,
    build_feature_net,
    cache_path,
    describe,
    get_feature_net,
    load_feature_net,
)
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run

# Test-accuracy bars: the 99.0% for MNIST; Fashion-MNIST is harder, small CNNs reach 90–92%.
BARS = {"mnist": 0.99, "fashion-mnist": 0.90}
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"],
}


@dataclass
class Config(ExperimentConfig):
    data: str = param("mnist", "data set the feature network is trained on", choices=("mnist", "fashion-mnist"))
    recipe: str = param("standard", "training recipe (tiny: seconds, for smoke tests only)", choices=tuple(RECIPES))
    rebuild: bool = param(False, "retrain and replace the cached network even if it is intact")


def run(cfg: Config, run: Run) -> dict:
    from kexue.data.images import load_fashion_mnist, load_mnist

    path = cache_path(cfg.data, cfg.recipe, cfg.seed)
    epochs: list[int] = []  # filled only if a network is trained in this run

    def log(step: int, **m: float) -> None:
        epochs.append(step)
        run.log(step=step, **m)

    previous = None  # with rebuild: the intact cached weights' hash, to show that retraining reproduces them
    if cfg.rebuild and path.is_file():
        with contextlib.suppress(FeatureNetCacheError):  # a bad file is simply replaced
            previous = load_feature_net(path).provenance["weights_sha256"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if cfg.rebuild:
            net = build_feature_net(cfg.data, cfg.recipe, cfg.seed, device=run.device, log=log)
        else:
            net = get_feature_net(cfg.data, cfg.recipe, cfg.seed, device=run.device, log=log)
    for w in caught:  # a cache that failed its hash: say so in the report too, not only on stderr
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    problems = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    cached = not epochs
    prov = net.provenance

    images, labels = (load_mnist if cfg.data == "mnist" else load_fashion_mnist)("test")
    labels_t = torch.from_numpy(labels)
    logits = net.logits(images)
    pred = logits.argmax(-1)
    acc = (pred == labels_t).float().mean().item()
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (labels, pred.numpy()), 1)
    per_class = confusion.diagonal() / confusion.sum(1)
    run.log(test_accuracy=acc, weights_sha256=prov["weights_sha256"], cached=cached, path=str(path))

    bar = BARS[cfg.data] if cfg.recipe == "standard" else None
    run.summary("test_accuracy", acc, bar=bar, direction="max",
                note=f"{cfg.data} test set (10,000 images), recipe {cfg.recipe}")
    if not cached:
        run.summary("train_seconds", prov["train_seconds"], direction="min",
                    note=f"{prov['threads']} torch thread(s), device {run.device.type}")

    run.section("Feature network")
    for message in problems:
        run.text(f"**Cache rebuilt**: {message}.")
    if previous is not None:
        same = previous == prov["weights_sha256"]
        run.log(same_weights_as_cached=same)
        run.text(f"Retrained with the same seed: the weights hash {'equals' if same else 'differs from'} that of the "
                 f"file it replaced ({previous[:12]}), so training {'is' if same else 'was not'} reproducible here"
                 f"{'' if same else ' (another machine, thread count or torch version changes float sums)'}.")
    run.text(f"`{describe(net)}`, cached at `{path}` ({'loaded from the cache' if cached else 'trained in this run'})"
             f". Recipe `{cfg.recipe}`: {RECIPES[cfg.recipe]}. Its penultimate layer ({net.num_features} features) "
             "is the space kexue's FID, KID and precision/recall are computed in; its softmax labels samples for "
             "mode counting. Scores on this network are comparable with each other, not with Inception-based FIDs "
             "in papers.")
    hist = prov.get("history", [])
    if hist:
        run.table(["epoch", "train loss", "test accuracy"],
                  [[h["epoch"], h["train_loss"], f"{100 * h['test_accuracy']:.2f}%"] for h in hist],
                  caption=f"Training history (seed {prov['seed']}, {prov.get('train_seconds', '?')} s).")
    run.table(["class", *CLASSES[cfg.data]], [["accuracy", *[f"{100 * a:.1f}%" for a in per_class]]],
              caption=f"Per-class test accuracy; overall {100 * acc:.2f}%.")
    _figures(cfg, run, net, images, labels, confusion)
    return {"test_accuracy": acc, "weights_sha256": prov["weights_sha256"], "cached": cached}


def _figures(cfg: Config, run: Run, net, images: np.ndarray, labels: np.ndarray, confusion: np.ndarray) -> None:
    names = CLASSES[cfg.data]
    fig, axes = subplots(1, 2, width=4.6, height=4.2)
    ax = axes[0, 0]
    norm = confusion / confusion.sum(1, keepdims=True)
    ax.imshow(np.log10(np.maximum(norm, 1e-4)), cmap="Blues", vmin=-4, vmax=0)
    for i in range(10):
        for j in range(10):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(10), names, rotation=90, fontsize=7)
    ax.set_yticks(range(10), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion (counts; colour: log row share)", fontsize=9)

    # The feature space itself: the two leading principal components of the test features, one colour per class.
    ax = axes[0, 1]
    feats = net.features(images[:3000]).double()
    feats = feats - feats.mean(0)
    _, _, v = torch.linalg.svd(feats, full_matrices=False)
    proj = (feats @ v[:2].T).numpy()
    for c in range(10):
        sel = labels[:3000] == c
        ax.scatter(proj[sel, 0], proj[sel, 1], s=2, alpha=0.5, label=names[c])
    ax.set_title("features: first two principal components", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=4, ncol=2, loc="best")
    run.figure(fig, "featurenet", f"The {cfg.data} feature network on the test set: confusion matrix, and the "
               "test features projected on their two leading principal components (3,000 images).", headline=True)


EXPERIMENT = Experiment(
    name="eval-featurenet",
    post=2,
    description="train or load the offline MNIST / Fashion-MNIST feature network used by FID, KID and mode counts",
    config=Config,
    run=run,
    presets={"quick": {}, "full": {}},
    smoke={"recipe": "tiny"},
)
