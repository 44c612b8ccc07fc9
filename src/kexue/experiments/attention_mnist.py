"""attention-mnist: autoregressive MNIST pixels with linear vs softmax attention (post 6; arXiv 2006.16236, Table 1).

Claim (Katharopoulos et al., Table 1 and Appendix C.1): on pixel-by-pixel MNIST generation, linear attention reaches
bits/dim close to softmax attention (0.644 vs 0.621) while generating 317x faster than softmax without a cache and
19x faster than softmax with a KV cache, because as an RNN its per-pixel cost does not grow with the position.

We train two small decoder-only Transformers (softmax and linear, elu+1 features) on 8-bit pixel sequences with a
256-way softmax output (the paper uses a mixture of logistics), report test bits/dim, then time batched generation
of whole images: linear as an RNN, softmax with a KV cache, and softmax re-running the prefix at every pixel.
"""

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kexue._progress import progress
from kexue.data import load_mnist
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.transformer import Transformer, TransformerConfig
from kexue.train.capture import capture

BOS = 256  # start token; pixel values are 0..255
PAPER_BPD = {"softmax": 0.621, "linear": 0.644}


@dataclass
class Config(ExperimentConfig):
    size: int = param(28, "image side in pixels (28 = the paper; 14 = 2x2 average-pooled)", choices=(14, 28))
    dim: int = param(256, "model width", min=8)
    depth: int = param(8, "Transformer blocks", min=1)
    heads: int = param(8, "attention heads", min=1)
    feature_map: str = param("elu", "linear attention feature map", choices=("elu", "relu", "cos", "favor"))
    steps: int = param(20000, "training steps per model", min=1)
    batch: int = param(16, "training images per step", min=1)
    lr: float = param(3e-4, "Adam learning rate (cosine decay, 2% warm-up)", min=1e-6, max=1.0)
    train_images: int = param(60000, "training images used", min=16, max=60000)
    eval_images: int = param(2000, "test images for bits/dim", min=1, max=10000)
    gen_batch: int = param(64, "images generated at once (linear RNN and softmax KV cache)", min=1)
    gen_batch_nocache: int = param(8, "images generated at once by softmax without a cache", min=1)
    log_every: int = param(50, "steps between logged losses", min=1)


def _sequences(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).float()
    if size == 14:
        x = F.avg_pool2d(x[:, None], 2)[:, 0].round()
    return x.long().flatten(1)  # [N, size*size], raster order


def _bits_per_dim(model: Transformer, pixels: torch.Tensor, batch: int, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = pixels[i : i + batch].to(device)
            inp = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
            total += F.cross_entropy(model(inp).flatten(0, 1), x.flatten(), reduction="sum").item()
            count += x.numel()
    return total / count / math.log(2)


def _train(name: str, cfg: Config, model: Transformer, pixels: torch.Tensor, run: Run) -> list[tuple[int, float]]:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warm = max(1, cfg.steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    curve, running = [], []
    model.train()
    bar = progress(range(cfg.steps), total=cfg.steps, desc=f"train {name}", unit="step")
    for step in bar:
        idx = torch.randint(0, len(pixels), (cfg.batch,), generator=gen)
        x = pixels[idx].to(run.device)
        inp = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
        loss = F.cross_entropy(model(inp).flatten(0, 1), x.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item() / math.log(2))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            bpd = float(np.mean(running))
            curve.append((step + 1, bpd))
            run.log(step + 1, model=name, train_bits_per_dim=bpd)
            bar.set_postfix(bpd=f"{bpd:.3f}")
            running = []
    model.eval()
    return curve


def _time_generation(model: Transformer, batch: int, n_pix: int, use_cache: bool, device: torch.device,
                     seed: int) -> tuple[float, torch.Tensor]:
    prompt = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    out = model.generate(prompt, n_pix, use_cache=use_cache, generator=gen)
    seconds = time.perf_counter() - start
    return batch / seconds, out[:, 1:].clamp(max=255)


def run(cfg: Config, run: Run) -> dict:
    train_x, _ = load_mnist("train")
    test_x, _ = load_mnist("test")
    train = _sequences(train_x[: cfg.train_images], cfg.size)
    test = _sequences(test_x[: cfg.eval_images], cfg.size)
    n_pix = cfg.size * cfg.size
    models, curves, bpd = {}, {}, {}
    for kind in ("linear", "softmax"):
        torch.manual_seed(cfg.seed)
        mcfg = TransformerConfig(vocab_size=257, max_len=n_pix + 1, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                 attention=kind, feature_map=cfg.feature_map)
        model = Transformer(mcfg, generator=torch.Generator().manual_seed(cfg.seed)).to(run.device)
        curves[kind] = _train(kind, cfg, model, train, run)
        bpd[kind] = _bits_per_dim(model, test, max(1, cfg.batch * 2), run.device)
        run.log(model=kind, test_bits_per_dim=bpd[kind])
        models[kind] = model

    # Generation throughput, batched, whole images from a BOS token.
    rates, samples = {}, {}
    rates["linear (RNN)"], samples["linear"] = _time_generation(models["linear"], cfg.gen_batch, n_pix, True,
                                                                run.device, cfg.seed)
    rates["softmax + KV cache"], samples["softmax"] = _time_generation(models["softmax"], cfg.gen_batch, n_pix, True,
                                                                       run.device, cfg.seed)
    rates["softmax, no cache"], _ = _time_generation(models["softmax"], cfg.gen_batch_nocache, n_pix, False,
                                                     run.device, cfg.seed)
    vs_nocache = rates["linear (RNN)"] / rates["softmax, no cache"]
    vs_kv = rates["linear (RNN)"] / rates["softmax + KV cache"]
    run.log(**{f"images_per_s/{k}": v for k, v in rates.items()}, speedup_vs_nocache=vs_nocache,
            speedup_vs_kv=vs_kv)

    run.summary("speedup_vs_softmax_nocache", vs_nocache, bar=100, paper=317.0,
                note="images/s, linear RNN ÷ softmax re-running the prefix (paper: GPU, 8 layers)")
    run.summary("speedup_vs_softmax_kv_cache", vs_kv, paper=19.0, note="linear RNN ÷ softmax with KV cache")
    run.summary("bits_per_dim_linear", bpd["linear"], direction="min", paper=PAPER_BPD["linear"],
                note=f"test set, {cfg.size}x{cfg.size}, {cfg.steps} steps")
    run.summary("bits_per_dim_softmax", bpd["softmax"], direction="min", paper=PAPER_BPD["softmax"],
                note=f"test set, {cfg.size}x{cfg.size}, {cfg.steps} steps")

    run.section("Claim")
    run.text("Linear attention decodes as an RNN: generating pixel t costs the same at every t, where softmax "
             "attention must look at all t previous pixels (with a KV cache) or recompute them (without one). "
             "Katharopoulos et al. report 317x (no cache) and 19x (KV cache) more images/s on MNIST at 0.644 vs "
             "0.621 bits/dim.")
    run.section("Results")
    run.table(["model", "test bits/dim", "paper"],
              [[k, bpd[k], PAPER_BPD[k]] for k in ("linear", "softmax")],
              caption=f"{cfg.depth} layers, width {cfg.dim}, {cfg.heads} heads, {cfg.steps} steps of {cfg.batch} "
              f"images, {cfg.size}x{cfg.size} pixels ({cfg.eval_images} test images). 256-way softmax output "
              "(the paper: mixture of logistics, 250 epochs).")
    run.table(["method", "batch", "images/s", "linear ÷ method"],
              [[k, cfg.gen_batch_nocache if "no cache" in k else cfg.gen_batch, v, rates["linear (RNN)"] / v]
               for k, v in rates.items()],
              caption=f"Whole {cfg.size}x{cfg.size} images sampled from a start token on {run.device}; wall clock "
              "of one batched generate() call per method (the no-cache baseline is compute-bound, so its images/s "
              "hardly depends on the batch).")
    if cfg.steps < 5000:
        run.text("This is a short run: bits/dim is far from converged and not comparable to the paper's; the "
                 "throughput ratios depend on the sequence length and the model size, not on training.")
    _figures(cfg, run, curves, samples, rates, models, test, n_pix)
    return {"bits_per_dim_linear": bpd["linear"], "bits_per_dim_softmax": bpd["softmax"],
            "speedup_vs_softmax_nocache": vs_nocache, "speedup_vs_softmax_kv_cache": vs_kv}


def _figures(cfg: Config, run: Run, curves: dict, samples: dict, rates: dict, models: dict, test: torch.Tensor,
             n_pix: int) -> None:
    side = cfg.size
    fig, axes = subplots(1, 3, width=3.6, height=3.4)
    for ax, kind in zip(axes[0, :2], ("linear", "softmax"), strict=True):
        imgs = samples[kind][:16].float().cpu().view(-1, side, side)
        k = math.ceil(math.sqrt(len(imgs)))
        grid = torch.zeros(k * side, k * side)
        for i, im in enumerate(imgs):
            grid[(i // k) * side : (i // k + 1) * side, (i % k) * side : (i % k + 1) * side] = im
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{kind} samples" + (" (as an RNN)" if kind == "linear" else " (KV cache)"), fontsize=9)
        ax.axis("off")
    ax = axes[0, 2]
    names = list(rates)
    ax.barh(names, [rates[n] for n in names], color=["C0", "C1", "C3"])
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log)")
    for i, n in enumerate(names):
        ax.text(rates[n], i, f" {rates['linear (RNN)'] / rates[n]:.3g}x slower" if i else " 1x", va="center",
                fontsize=8)
    ax.set_title("generation throughput", fontsize=9)
    run.figure(fig, "samples_throughput", "Left: digits sampled pixel by pixel from the linear model (decoded as an "
               "RNN) and the softmax model (KV cache). Right: images/s of batched generation; labels give how many "
               "times faster linear attention is.", headline=True)

    fig, axes = subplots(1, 1, width=5, height=3.4)
    ax = axes[0, 0]
    for kind, curve in curves.items():
        ax.plot([s for s, _ in curve], [b for _, b in curve], label=kind)
    ax.set_xlabel("step")
    ax.set_ylabel("train bits/dim")
    ax.legend()
    run.figure(fig, "loss_curves", "Training loss (bits/dim, averaged between logs) for both models.")

    # Attention maps captured from inside forward (tap points), for a few query pixels of one test image.
    x = test[:1].to(run.device)
    inp = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
    queries = [n_pix // 2 - side // 2, n_pix * 3 // 4, n_pix - 1]
    depth = cfg.depth
    fig, axes = subplots(2 * depth, len(queries) + 1, width=2.0, height=2.0)
    for r, kind in enumerate(("linear", "softmax")):
        with torch.no_grad(), capture(None, taps=["blocks.*.attn.weights"]) as cap:
            models[kind](inp)
        for layer in range(depth):
            row = r * depth + layer
            w = cap[f"blocks.{layer}.attn.weights"][0].mean(0)  # [N, N], mean over heads
            axes[row, 0].imshow(x[0].view(side, side).cpu().numpy(), cmap="gray")
            axes[row, 0].set_title(f"{kind}, layer {layer}", fontsize=8)
            for c, qpos in enumerate(queries):
                # Input position j holds pixel j - 1 (position 0 is BOS): shift so the map is indexed by pixel.
                m = torch.cat([w[qpos, 1:], w.new_zeros(1)]).float().cpu().view(side, side).numpy()
                axes[row, c + 1].imshow(m, cmap="magma")
                axes[row, c + 1].plot(qpos % side, qpos // side, "c+", ms=8)
                axes[row, c + 1].set_title(f"query pixel {qpos}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    run.figure(fig, "attention_maps", "Attention weights (mean over heads) of the query that predicts the pixel "
               "marked + over the pixels before it, captured inside forward through tap points, for both trained "
               "models and every layer. Each row is a layer; the first column shows the input image.")


EXPERIMENT = Experiment(
    name="attention-mnist",
    post=6,
    description="autoregressive MNIST: bits/dim and generation speed, linear (RNN) vs softmax (KV cache, no cache)",
    config=Config,
    run=run,
    presets={"quick": {"dim": 64, "depth": 2, "heads": 4, "steps": 150, "batch": 8, "lr": 2e-3,
                       "train_images": 20000, "eval_images": 200, "gen_batch": 64, "gen_batch_nocache": 4,
                       "log_every": 10},
             "full": {}},
    smoke={"size": 14, "dim": 16, "depth": 1, "heads": 2, "steps": 3, "batch": 2, "train_images": 32,
           "eval_images": 4, "gen_batch": 2, "gen_batch_nocache": 1, "log_every": 1},
    headline=True,
)
