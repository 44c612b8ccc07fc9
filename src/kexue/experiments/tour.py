"""``kexue tour``: run each post's headline experiment and build ``index.html`` with one card per post."""

import time
from dataclasses import dataclass
from pathlib import Path

from kexue.errors import ConfigError
from kexue.eval.report import render_index
from kexue.experiments.config import ExperimentConfig
from kexue.experiments.registry import POSTS, experiments
from kexue.experiments.rundir import collect_env, create_run_dir


@dataclass(frozen=True)
class Claim:
    """What a tour card says an experiment shows, and the number that answers it.

    Attributes:
        text: the claim in one sentence (``code``, *emphasis* allowed).
        metric: the summary entry the card shows large; None: the run's first entry with a bar (else its first).
    """

    text: str
    metric: str | None = None


CLAIMS = {
    "energy-2d": Claim("An energy-model GAN with a mutual-information entropy term covers every mode of a 2-D "
                       "mixture, and latent MALA sharpens its samples."),
    "energy-anomaly": Claim("A point off the training data gets a high energy or a steep energy slope, so MEG's "
                            "energy works as an anomaly score."),
    "energy-optimizers": Claim("Momentum and large steps make an energy GAN's samples overshoot into far pits: "
                               "β1 = 0 or a small learning rate gives a lower KL."),
    "energy-stackedmnist": Claim("MEG's entropy term lets the generator cover all 1,000 StackedMNIST modes, with a "
                                 "lower KL than WGAN-GP."),
    "eval-featurenet": Claim("A small feature network trained offline classifies well enough to carry FID, KID and "
                             "mode counts without downloading Inception."),
    "eval-reference": Claim("Each offline metric is read against its floor: real data against real data, and "
                            "baselines that fail in known ways."),
    "ot-duality": Claim("The optimal-transport LP and its dual reach the same value, and for a metric cost one "
                        "potential with g = −f suffices (Kantorovich–Rubinstein)."),
    "wgan-2d": Claim("A gradient-penalised critic's estimate tracks the exact Wasserstein-1 distance while the "
                     "generator trains.", "gp_estimate_w1_corr"),
    "wgan-mnist": Claim("On MNIST, an EMA of the generator's weights lowers FID for WGAN-GP and WGAN-SN alike."),
    "ogan-mnist": Claim("With one correlation term, a GAN's discriminator doubles as an encoder: E(G(z)) tracks z "
                        "and reconstructions keep their class."),
    "ogan-fashion": Claim("O-GAN's encoder also works on Fashion-MNIST, and a weight EMA gives better samples than "
                          "the raw weights."),
    "ema-mnist": Claim("With Adam at a constant learning rate, an EMA of the weights tests better than the raw "
                       "weights, which keep bouncing around the minimum."),
    "ema-posthoc": Claim("After training, snapshots of two tracked EMA profiles reconstruct the EMA of any other "
                         "width as well as tracking that width directly would.", "max_gap_recon_vs_tracked"),
    "ema-dirac": Claim("On the Dirac-GAN the raw weights circle the equilibrium forever; their EMA converges to "
                       "it."),
    "init-geometry": Claim("Two random vectors in high dimension are almost orthogonal: the variance of their angle "
                           "matches the post's table."),
    "init-depth": Claim("Weights of variance gain²/n keep a signal's norm through 50 plain layers, where PyTorch's "
                        "default shrinks it."),
    "attention-mnist": Claim("Causal linear attention decodes as an RNN, so it generates MNIST images many times "
                             "faster than softmax attention at similar bits/dim."),
    "attention-copy": Claim("On the copy task, linear attention learns as well as softmax attention.",
                            "accuracy_linear_elu"),
    "attention-scaling": Claim("Linear attention's time and memory grow linearly with sequence length, softmax "
                               "attention's quadratically."),
    "nvae-mnist": Claim("A deep hierarchical VAE (NVAE) reaches a low test NLL on binarised MNIST and uses its "
                        "latent groups."),
    "nvae-colour": Claim("NVAE's discretised logistic mixture models 8-bit images in fewer bits/dim than "
                         "independent pixels."),
    "vae-flat-mnist": Claim("A single-latent VAE with NVAE's parameter count and budget: the baseline the hierarchy "
                            "has to beat."),
    "flyvec-corpus": Claim("FlyVec's binary hashes capture word similarity, yet stay below word2vec trained on the "
                           "same corpus."),
    "flyvec-context": Claim("Computed with its sentence as context, an ambiguous word's FlyVec hash moves toward the "
                            "sense the sentence uses."),
}


def plan_tour(only: list[str] | None = None, run_all: bool = False) -> list[tuple[int, str | None]]:
    """``(post, experiment name or None)`` in tour order: headline experiments, or every one with ``run_all``."""
    registry = experiments()
    if only:
        unknown = [n for n in only if n not in registry]
        if unknown:
            raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(registry)}")
        return [(registry[n].post, n) for n in only]
    plan = []
    for post in POSTS:
        names = [e.name for e in registry.values() if e.post == post.number and (run_all or e.headline)]
        plan += [(post.number, n) for n in names] or [(post.number, None)]
    return plan


def run_tour(*, preset: str = "quick", only: list[str] | None = None, run_all: bool = False,
             out: str | Path = "runs", seed: int | None = None, device: str | None = None,
             log=print) -> Path:
    """Run the tour into a new folder under ``out``; returns the path of its ``index.html``.

    The index is rewritten before and after each experiment, so it can be watched while the tour runs. A failing
    experiment is marked failed on its card and the tour goes on.
    """
    from kexue.experiments.runner import resolve_config, run_experiment

    # Everything the user chose is checked before a folder exists: a bad name, preset, seed or device leaves none.
    plan = plan_tour(only, run_all)
    for _, name in plan:
        if name is not None:
            resolve_config(experiments()[name], preset, None, seed, device)
    tour_dir = create_run_dir(out, f"tour-{preset}")
    cards = []
    for number, name in plan:
        post = POSTS[number - 1]
        claim = CLAIMS.get(name) if name else None
        cards.append({"post": number, "title": post.title, "url": post.url, "experiment": name,
                      "status": "pending" if name else "missing", "claim": claim.text if claim else None,
                      "metric": claim.metric if claim else None})
    start = time.time()
    page = {"preset": preset, "started": start, "env": collect_env(device or ExperimentConfig.device)}
    render_index(tour_dir, cards, running=True, **page)
    for card in cards:
        if card["experiment"] is None:
            continue
        card.update(status="running", started=time.time())
        render_index(tour_dir, cards, running=True, **page)
        log(f"[tour] post {card['post']}: {card['experiment']} ({preset}) ...")
        result = run_experiment(card["experiment"], preset=preset, seed=seed, device=device, out=tour_dir,
                                raise_errors=False)
        card.update(status=result.status, run=result.path.name, seconds=result.seconds, error=result.error)
        log(f"[tour] post {card['post']}: {card['experiment']} {result.status} in {result.seconds:.0f} s"
            + (f": {result.error}" if result.error else ""))
        render_index(tour_dir, cards, running=True, **page)
    index = render_index(tour_dir, cards, running=False, **page)
    log(f"[tour] finished in {time.time() - start:.0f} s")
    return index
