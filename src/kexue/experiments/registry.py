"""The experiment registry: name -> :class:`Experiment`, and the eight posts the tour walks through.

An experiment is a recipe ``run(cfg, run) -> metrics``: ``cfg`` is its typed config, ``run`` the
:class:`~kexue.experiments.rundir.Run` it writes figures, metrics and report sections through. Each experiment module
defines ``EXPERIMENT``; modules are found and imported on first use, so ``import kexue`` stays light.
"""

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kexue.errors import ConfigError
from kexue.experiments.config import ExperimentConfig


@dataclass(frozen=True)
class Post:
    number: int  # the post's place in kexue (1..8), not its kexue.fm archive id
    title: str
    url: str


POSTS = (
    Post(1, "GANs as energy models (MEG)", "https://kexue.fm/archives/6316"),
    Post(2, "Wasserstein distance, LP duality and WGAN", "https://kexue.fm/archives/6280"),
    Post(3, "O-GAN: a discriminator that is also an encoder", "https://kexue.fm/archives/6409"),
    Post(4, "Training tools: EMA, intermediate tensors, process-safe data", "https://kexue.fm/archives/6575"),
    Post(5, "Initialisation from geometry", "https://kexue.fm/archives/7180"),
    Post(6, "Linear attention", "https://kexue.fm/archives/7546"),
    Post(7, "NVAE: a deep hierarchical VAE", "https://kexue.fm/archives/7574"),
    Post(8, "FlyVec: binary sparse word vectors", "https://kexue.fm/archives/8159"),
)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: the CLI name, e.g. ``"init-geometry"``.
        post: which post (1..8) it reproduces.
        description: one line for ``kexue list``.
        config: its config dataclass (a subclass of ``ExperimentConfig``); its defaults are the ``full`` preset.
        run: ``run(cfg, run) -> dict`` of final metrics.
        presets: preset name -> field overrides; ``quick`` must finish in minutes on 2 CPU cores.
        smoke: overrides on top of ``quick`` that make the test suite's smoke run take seconds.
        headline: the tour runs this one for its post.
    """

    name: str
    post: int
    description: str
    config: type[ExperimentConfig]
    run: Callable[[Any, Any], dict]
    presets: dict[str, dict[str, Any]] = field(default_factory=lambda: {"quick": {}, "full": {}})
    smoke: dict[str, Any] = field(default_factory=dict)
    headline: bool = False


_INFRASTRUCTURE = {"config", "registry", "rundir", "runner", "tour"}


def experiments() -> dict[str, Experiment]:
    """All registered experiments by name, in post order.

    Every module of this package other than the infrastructure ones is a recipe and must define ``EXPERIMENT``.
    """
    import kexue.experiments as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in _INFRASTRUCTURE:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found.append(module.EXPERIMENT)
    return {e.name: e for e in sorted(found, key=lambda e: (e.post, not e.headline, e.name))}


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    registry = experiments()
    if name not in registry:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(registry)} (see `kexue list`)")
    return registry[name]
