"""``kexue tour``: run each post's headline experiment and build ``index.html`` with one card per post."""

import time
from pathlib import Path

from kexue.errors import ConfigError
from kexue.eval.report import render_index
from kexue.experiments.registry import POSTS, experiments
from kexue.experiments.rundir import create_run_dir


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
        cards.append({"post": number, "title": post.title, "url": post.url, "experiment": name,
                      "status": "pending" if name else "missing"})
    render_index(tour_dir, cards, running=True)
    start = time.time()
    for card in cards:
        if card["experiment"] is None:
            continue
        card["status"] = "running"
        render_index(tour_dir, cards, running=True)
        log(f"[tour] post {card['post']}: {card['experiment']} ({preset}) ...")
        result = run_experiment(card["experiment"], preset=preset, seed=seed, device=device, out=tour_dir,
                                raise_errors=False)
        card.update(status=result.status, run=result.path.name, seconds=result.seconds, error=result.error)
        log(f"[tour] post {card['post']}: {card['experiment']} {result.status} in {result.seconds:.0f} s"
            + (f": {result.error}" if result.error else ""))
        render_index(tour_dir, cards, running=True)
    index = render_index(tour_dir, cards, running=False)
    log(f"[tour] finished in {time.time() - start:.0f} s")
    return index
