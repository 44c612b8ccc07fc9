"""flyvec-context: contextual (dynamic) FlyVec hashes of ambiguous words move toward the context's sense (post 8).

FlyVec's input is a bag of context words next to a one-hot target, so the same network gives a context-free
("static") hash, top-k of the target's column, and a contextual ("dynamic") one, top-k of W [BoW(context); e_w]
(Liang et al., ICLR 2021; Su, kexue.fm/archives/8159, doubts how much this "dynamic" framing adds). The official
code exposes no contextual API; users asked for it (bhoov/flyvec issue #5). For ambiguous words (bank, bass,
apple, ...) in sentences of each sense we measure how many active units the dynamic hash shares with the static
hashes of words of each sense (sense words that occur in the sentence itself are left out), against the static
hash: the hash should gain overlap with its own sense more than with the other.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from kexue.data import load_corpus
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.flyvec import FlyVec, tokenize
from kexue.ops.sparse import pairwise_overlap

# word -> {sense: (sense words, context sentences)}
CASES = {
    "bank": {
        "finance": (["money", "loan", "deposit", "credit", "account", "cash", "interest", "banker"],
                    ["he went to the bank to deposit his money and ask for a loan",
                     "the bank raised interest rates on every savings account and credit card"]),
        "river": (["river", "shore", "water", "stream", "flood", "boat", "banks", "mud"],
                  ["they sat on the grassy bank of the river watching the water flow",
                   "the boat drifted toward the muddy bank where the stream meets the river"]),
    },
    "bass": {
        "music": (["guitar", "music", "drum", "band", "song", "sound", "piano", "player"],
                  ["he plays bass guitar in a jazz band with a drummer and a piano player",
                   "turn up the bass so the music and the drums sound louder"]),
        "fish": (["fish", "trout", "lake", "fishing", "catch", "salmon", "pond", "boat"],
                 ["we caught a large bass while fishing on the lake from a small boat",
                  "the bass and trout swim in the cold water of the pond"]),
    },
    "apple": {
        "fruit": (["fruit", "tree", "pie", "orchard", "juice", "orange", "eat", "sweet"],
                  ["she picked a ripe red apple from the tree in the orchard",
                   "eat an apple with some cheese or bake it in a sweet pie"]),
        "computer": (["computer", "software", "macintosh", "windows", "pc", "mac", "microsoft", "linux"],
                     ["apple released new software for the macintosh computer and its windows rivals",
                      "the apple mac runs unix software much like a linux pc"]),
    },
    "spring": {
        "season": (["summer", "winter", "autumn", "season", "april", "may", "weather", "warm"],
                   ["in the spring the weather turns warm after the long cold winter",
                    "flowers bloom in april and may each spring before the summer heat"]),
        "water": (["water", "well", "fountain", "stream", "source", "fresh", "pool", "flowing"],
                  ["they drank fresh water from a spring flowing out of the rock",
                   "the spring feeds a clear stream and a small pool of cool water"]),
    },
    "plant": {
        "factory": (["factory", "workers", "production", "steel", "industrial", "manufacturing", "power", "mill"],
                    ["the steel plant employs thousands of workers in manufacturing",
                     "the power plant and the factory increased industrial production"]),
        "vegetation": (["tree", "leaves", "flower", "seed", "grow", "soil", "roots", "garden"],
                       ["water the plant so its roots grow deep in the soil of the garden",
                        "the plant has green leaves a yellow flower and small seeds"]),
    },
}


@dataclass
class Config(ExperimentConfig):
    checkpoint: str = param("", "a FlyVec .safetensors to use (e.g. from flyvec-corpus); empty = train one here")
    max_tokens: int = param(0, "corpus tokens to train on (0 = all)", min=0)
    vocab_size: int = param(20_000, "vocabulary size V", min=3)
    n_cells: int = param(400, "Kenyon cells K", min=8)
    window: int = param(11, "window length (odd)", min=3)
    epochs: int = param(15, "training epochs", min=1)
    lr: float = param(0.05, "initial learning rate", min=0.0)
    k: int = param(50, "active units per hash (official default 50)", min=1)


def _train(cfg: Config, run: Run) -> tuple[FlyVec, float]:
    if cfg.checkpoint:
        return FlyVec.load(cfg.checkpoint, device=run.device), 0.0
    docs = load_corpus(max_tokens=cfg.max_tokens or None)
    model = FlyVec(cfg.n_cells, cfg.window, vocab_size=cfg.vocab_size, seed=cfg.seed, device=run.device)
    t0 = time.perf_counter()
    model.fit(docs, epochs=cfg.epochs, lr=cfg.lr,
              callback=lambda info: info["energy"] is not None and run.log(
                  step=info["epoch"] * 10**6 + info["batch"], stage="flyvec", **info))
    seconds = time.perf_counter() - t0
    model.save(run.checkpoints / "flyvec.safetensors")
    return model, seconds


def run(cfg: Config, run: Run) -> dict:
    torch.manual_seed(cfg.seed)
    model, seconds = _train(cfg, run)
    k = min(cfg.k, model.n_cells)
    known = set(model.vocab.index)
    rows, shifts = [], []
    for word, senses in CASES.items():
        if word not in known:
            continue
        static = model.static_hash([word], k)
        for sense, (_, sentences) in senses.items():
            for sentence in sentences:
                tokens = tokenize(sentence)
                context = [t for t in tokens if t != word]
                dynamic = model.dynamic_hash(word, context, k).unsqueeze(0)
                gains = {}
                for other, (sense_words, _) in senses.items():
                    probe = [w for w in sense_words if w in known and w not in tokens and w != word]
                    if not probe:
                        continue
                    codes = model.static_hash(probe, k)
                    gains[other] = (pairwise_overlap(dynamic, codes).float().mean().item(),
                                    pairwise_overlap(static, codes).float().mean().item())
                if sense not in gains or len(gains) < 2:
                    continue
                wrong = next(s for s in gains if s != sense)
                own_shift = gains[sense][0] - gains[sense][1]
                other_shift = gains[wrong][0] - gains[wrong][1]
                shifts.append((f"{word}/{sense}", own_shift, other_shift))
                rows.append([word, sense, sentence, f"{gains[sense][1]:.1f} → {gains[sense][0]:.1f}",
                             f"{gains[wrong][1]:.1f} → {gains[wrong][0]:.1f}", "yes" if own_shift > other_shift
                             else "no"])
                run.log(step=len(shifts), word=word, sense=sense, own_static=gains[sense][1],
                        own_dynamic=gains[sense][0], other_static=gains[wrong][1], other_dynamic=gains[wrong][0])
    if not shifts:
        raise RuntimeError("none of the ambiguous words is in the model's vocabulary; use a larger vocab_size")
    moved = float(np.mean([own > other for _, own, other in shifts]))
    margin = float(np.mean([own - other for _, own, other in shifts]))
    run.summary("fraction_toward_context_sense", moved,
                note=f"contexts where the dynamic hash gains more overlap with its sense than the other (k = {k})")
    run.summary("mean_shift_margin_units", margin, note="mean (own-sense gain − other-sense gain), shared units")

    run.section("Claim")
    run.text("A FlyVec hash can be computed with the context: top-k of W [BoW(context); e_w]. For an ambiguous word, "
             "the contextual hash should move toward the words of the sense the sentence uses.")
    run.section("Setup")
    run.text(f"Model: V = {len(model.vocab):,}, K = {model.n_cells}, window {model.window}"
             + (f", loaded from {cfg.checkpoint}" if cfg.checkpoint else f", trained here in {seconds:.0f} s "
                f"({cfg.epochs} epochs, lr {cfg.lr})") + f". k = {k}. Overlap = mean number of active units shared "
             "with the static hashes of the sense's probe words (probe words in the sentence itself are left out).")
    run.section("Contexts")
    run.table(["word", "sense of the sentence", "sentence", "overlap with own sense: static → dynamic",
               "other sense: static → dynamic", "toward own sense"], rows)
    run.text(f"The dynamic hash gained more overlap with the sentence's sense than with the other one in "
             f"{moved:.0%} of {len(shifts)} sentences (mean margin {margin:.2f} shared units of k = {k}).")

    fig, axes = subplots(1, 1, width=max(5.0, 0.45 * len(shifts)), height=3.4)
    ax = axes[0, 0]
    x = np.arange(len(shifts))
    ax.bar(x - 0.2, [s[1] for s in shifts], 0.4, label="gain toward the sentence's sense")
    ax.bar(x + 0.2, [s[2] for s in shifts], 0.4, label="gain toward the other sense")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, [s[0] for s in shifts], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Δ shared units (dynamic − static)")
    ax.legend(fontsize=7)
    run.figure(fig, "context_shift", f"Change in overlap (shared active units, k = {k}) between an ambiguous word's "
               "hash and the hashes of sense words when the sentence is added as context.", headline=True)
    return {"fraction_toward_context_sense": moved, "mean_shift_margin": margin}


EXPERIMENT = Experiment(
    name="flyvec-context",
    post=8,
    description="contextual FlyVec hashes of ambiguous words (bank, bass, apple, ...) move toward the sense",
    config=Config,
    run=run,
    presets={"quick": {"max_tokens": 4_000_000, "vocab_size": 10_000, "epochs": 4}, "full": {}},
    smoke={"max_tokens": 100_000, "vocab_size": 2000, "n_cells": 64, "epochs": 1, "k": 8},
)
