"""attention-mnist: autoregressive MNIST pixels with linear vs softmax attention (post 6; arXiv 2006.16236, Table 1).

Claim (Katharopoulos et al., Table 1 and Appendix C.1): on pixel-by-pixel MNIST generation, linear attention reaches
bits/dim close to softmax attention (0.644 vs 0.621) while generating 317x faster than softmax without a cache and
19x faster than softmax with a KV cache, because as an RNN its per-pixel cost does not grow with the position.

We train two decoder-only Transformers (softmax and linear, elu+1 features by default) on 8-bit pixel sequences with
a 256-way softmax output (the paper uses a mixture of 10 logistics), report test bits/dim, then time batched
generation of whole images: linear as an RNN, softmax with a KV cache, and softmax re-running the prefix at every
pixel. Attention maps of both trained models are captured from inside ``forward`` through tap points.
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kexue._progress import progress
from kexue.data import load_mnist
from kexue.eval.plots import image_grid, subplots
from kexue.experiments._transformer_training import train_transformer
from kexue.experiments.config import ExperimentConfig, check_divisible, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.transformer import Transformer, TransformerConfig
from kexue.train.capture import capture

BOS = 256  # start token; pixel values are 0..255
PAPER_BPD = {"softmax": 0.621, "linear": 0.644}
PAPER_SPEEDUP = {"no cache": 317.0, "KV cache": 19.0}  # images/s ratios, Table 1 and Appendix C.1 (GPU)


@dataclass
class Config(ExperimentConfig):
    size: int = param(28, "image side in pixels (28 = the paper; 14, 7 = average-pooled)", choices=(7, 14, 28))
    dim: int = param(256, "model width (paper: 256)", min=8)
    depth: int = param(8, "Transformer blocks (paper: 8)", min=1)
    heads: int = param(8, "attention heads (paper: 8)", min=1)
    feature_map: str = param("elu", "linear attention feature map", choices=("elu", "relu", "cos", "favor"))
    steps: int = param(1_500_000, "training steps per model (paper: 250 epochs of 6,000 batches)", min=1)
    batch: int = param(10, "training images per step (paper: 10)", min=1)
    optimizer: str = param("radam", "optimiser (paper: RAdam)", choices=("adam", "radam"))
    lr: float = param(1e-4, "learning rate, cosine decay after a 2% warm-up (paper: 1e-4)", min=1e-6, max=1.0)
    train_images: int = param(60000, "training images used", min=16, max=60000)
    eval_images: int = param(10000, "test images for bits/dim", min=1, max=10000)
    gen_batch: int = param(256, "images generated at once (linear RNN and softmax KV cache)", min=1)
    gen_batch_nocache: int = param(16, "images generated at once by softmax without a cache", min=2)
    checkpoint_every: int = param(5000, "steps between checkpoints (0 = only the start)", min=0)
    log_every: int = param(50, "steps between logged losses", min=1)

    def check(self) -> None:
        check_divisible(self, "dim", "heads")


def _sequences(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(images).float()
    if size < 28:
        x = F.avg_pool2d(x[:, None], 28 // size)[:, 0].round()
    return x.long().flatten(1)  # [N, size*size], raster order


def _inputs(x: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, P]`` -> model inputs ``[B, P]``: BOS, then every pixel but the last (input j predicts pixel j)."""
    return torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)


def _bits_per_dim(model: Transformer, pixels: torch.Tensor, batch: int, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            x = pixels[i : i + batch].to(device)
            total += F.cross_entropy(model(_inputs(x)).flatten(0, 1), x.flatten(), reduction="sum").item()
            count += x.numel()
    return total / count / math.log(2)


def _time_generation(model: Transformer, batch: int, n_pix: int, use_cache: bool, device: torch.device,
                     seed: int) -> tuple[float, torch.Tensor]:
    """Images/s of one batched ``generate()`` call from a BOS token, and the sampled pixels ``[batch, n_pix]``."""
    prompt = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    out = model.generate(prompt, n_pix, use_cache=use_cache, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return batch / seconds, out[:, 1:].clamp(max=255)


def run(cfg: Config, run: Run) -> dict:
    train_x, _ = load_mnist("train")
    test_x, _ = load_mnist("test")
    train = _sequences(train_x[: cfg.train_images], cfg.size)
    test = _sequences(test_x[: cfg.eval_images], cfg.size)
    n_pix = cfg.size * cfg.size
    warm = max(1, cfg.steps // 50)

    def warmup_cosine(s: int) -> float:  # the learning-rate factor at step s
        return min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))

    def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The batch is a function of the step: both models see the same images, and a resumed run replays them.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x = train[torch.randint(0, len(train), (cfg.batch,), generator=g)].to(run.device)
        return _inputs(x), x

    models, curves, bpd = {}, {}, {}
    for kind in ("linear", "softmax"):
        torch.manual_seed(cfg.seed)
        mcfg = TransformerConfig(vocab_size=257, max_len=n_pix + 1, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                 attention=kind, feature_map=cfg.feature_map)
        model = Transformer(mcfg, generator=torch.Generator().manual_seed(cfg.seed)).to(run.device)
        curves[kind] = train_transformer(
            model, run, kind, {**asdict(cfg), "model": kind}, steps=cfg.steps, optimizer=cfg.optimizer, lr=cfg.lr,
            schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine), batch=batch_at,
            metric="train_bits_per_dim", unit=math.log(2), checkpoint_every=cfg.checkpoint_every,
            log_every=cfg.log_every, desc=f"train {kind}")
        bpd[kind] = _bits_per_dim(model, test, max(1, cfg.batch * 2), run.device)
        run.log(model=kind, test_bits_per_dim=bpd[kind])
        models[kind] = model

    # Generation throughput: whole images from a BOS token, one batched generate() call per row.
    small, half = cfg.gen_batch_nocache, max(1, cfg.gen_batch_nocache // 2)
    plan = [("linear (RNN)", "linear", cfg.gen_batch, True), ("softmax + KV cache", "softmax", cfg.gen_batch, True),
            ("softmax, no cache", "softmax", small, False), ("softmax, no cache", "softmax", half, False),
            ("linear (RNN)", "linear", small, True)]
    rates, samples = {}, {}
    for label, kind, batch, cache in progress(plan, desc="generation", unit="call"):
        if (label, batch) in rates:
            continue
        rates[label, batch], out = _time_generation(models[kind], batch, n_pix, cache, run.device, cfg.seed)
        samples.setdefault(kind, out)
        run.log(method=label, batch=batch, images_per_s=rates[label, batch])
    lin = rates["linear (RNN)", cfg.gen_batch]
    vs_nocache = lin / rates["softmax, no cache", small]
    vs_kv = lin / rates["softmax + KV cache", cfg.gen_batch]
    same_batch = rates["linear (RNN)", small] / rates["softmax, no cache", small]
    run.summary("speedup_vs_softmax_nocache", vs_nocache, bar=100, paper=PAPER_SPEEDUP["no cache"],
                note=f"images/s, linear RNN (batch {cfg.gen_batch}) ÷ softmax re-running the prefix (batch {small})")
    run.summary("speedup_vs_softmax_kv_cache", vs_kv, paper=PAPER_SPEEDUP["KV cache"],
                note=f"images/s, linear RNN ÷ softmax with KV cache, both batch {cfg.gen_batch}")
    run.summary("speedup_vs_softmax_nocache_same_batch", same_batch,
                note=f"images/s at batch {small} for both")
    run.summary("bits_per_dim_linear", bpd["linear"], direction="min", paper=PAPER_BPD["linear"],
                note=f"test set, {cfg.size}x{cfg.size}, {cfg.steps} steps")
    run.summary("bits_per_dim_softmax", bpd["softmax"], direction="min", paper=PAPER_BPD["softmax"],
                note=f"test set, {cfg.size}x{cfg.size}, {cfg.steps} steps")

    run.section("Claim")
    run.text("Linear attention decodes as an RNN: generating pixel t costs the same at every t, where softmax "
             "attention must look at all t previous pixels (with a KV cache) or recompute them (without one). "
             "Katharopoulos et al. report 317x (no cache) and 19x (KV cache) more images/s on MNIST, on a GPU, at "
             "0.644 vs 0.621 bits/dim.")
    run.section("Results")
    run.table(["model", "test bits/dim", "paper"],
              [[k, bpd[k], PAPER_BPD[k]] for k in ("linear", "softmax")],
              caption=f"{cfg.depth} layers, width {cfg.dim}, {cfg.heads} heads, {cfg.steps} steps of {cfg.batch} "
              f"images ({cfg.optimizer}, lr {cfg.lr}), {cfg.size}x{cfg.size} pixels, {len(test)} test images. "
              "256-way softmax output (the paper: a mixture of 10 logistics, 250 epochs).")
    run.table(["method", "batch", "images/s", "linear RNN (batch " + str(cfg.gen_batch) + ") ÷ method"],
              [[label, batch, r, lin / r] for (label, batch), r in rates.items()],
              caption=f"Whole {cfg.size}x{cfg.size} images sampled from a start token on {run.device} "
              f"({torch.get_num_threads()} threads); wall clock of one batched generate() call per row. The "
              f"no-cache baseline is timed at two batch sizes ({half} and {small}) to show how much its images/s "
              f"still depend on the batch; the last row is linear attention at the no-cache batch ({same_batch:.3g}x "
              "faster there).")
    if cfg.steps < 5000:
        run.text("This is a short run: bits/dim is far from converged and not comparable to the paper's; the "
                 "throughput ratios depend on the image size, the model size and the batch, not on training.")
    _figures(cfg, run, curves, samples, rates, models, test, n_pix)
    return {"bits_per_dim_linear": bpd["linear"], "bits_per_dim_softmax": bpd["softmax"],
            "speedup_vs_softmax_nocache": vs_nocache, "speedup_vs_softmax_kv_cache": vs_kv,
            "speedup_vs_softmax_nocache_same_batch": same_batch}


def _figures(cfg: Config, run: Run, curves: dict, samples: dict, rates: dict, models: dict, test: torch.Tensor,
             n_pix: int) -> None:
    side = cfg.size
    fig, axes = subplots(1, 3, width=3.6, height=3.4)
    for ax, kind in zip(axes[0, :2], ("linear", "softmax"), strict=True):
        imgs = samples[kind][:16].view(-1, 1, side, side)
        ax.imshow(image_grid(imgs, math.ceil(math.sqrt(len(imgs))), fill=0), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{kind} samples" + (" (as an RNN)" if kind == "linear" else " (KV cache)"), fontsize=9)
        ax.axis("off")
    ax = axes[0, 2]
    lin = rates["linear (RNN)", cfg.gen_batch]
    names = [f"{label}, batch {batch}" for label, batch in rates]
    ax.barh(names, list(rates.values()), color=[f"C{i}" for i in range(len(rates))])
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log)")
    ax.tick_params(axis="y", labelsize=7)
    for i, r in enumerate(rates.values()):
        ax.text(r, i, f" {lin / r:.3g}x", va="center", fontsize=8)
    ax.set_title("generation throughput", fontsize=9)
    run.figure(fig, "samples_throughput", "Left: digits sampled pixel by pixel from the linear model (decoded as an "
               "RNN) and the softmax model (KV cache). Right: images/s of batched generation; labels give how many "
               f"times faster the linear RNN at batch {cfg.gen_batch} is.", headline=True)

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
    queries = [n_pix // 2 - side // 2, n_pix * 3 // 4, n_pix - 1]
    depth = cfg.depth
    fig, axes = subplots(2 * depth, len(queries) + 1, width=2.0, height=2.0)
    for r, kind in enumerate(("linear", "softmax")):
        with torch.no_grad(), capture(None, taps=["blocks.*.attn.weights"]) as cap:
            models[kind](_inputs(x))
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
               "marked + over the pixels before it (the weight on the start token is left out), captured inside "
               "forward through tap points, for both trained models and every layer. Each row is a layer; the "
               "first column shows the input image.")


EXPERIMENT = Experiment(
    name="attention-mnist",
    post=6,
    description="autoregressive MNIST: bits/dim and generation speed, linear (RNN) vs softmax (KV cache, no cache)",
    config=Config,
    run=run,
    presets={"quick": {"dim": 64, "depth": 2, "heads": 4, "steps": 300, "batch": 8, "optimizer": "adam", "lr": 2e-3,
                       "train_images": 20000, "eval_images": 200, "gen_batch": 64, "gen_batch_nocache": 4,
                       "checkpoint_every": 0, "log_every": 20},
             "full": {}},
    smoke={"size": 7, "dim": 16, "depth": 1, "heads": 2, "steps": 3, "batch": 2, "train_images": 32,
           "eval_images": 4, "gen_batch": 4, "gen_batch_nocache": 2, "log_every": 1},
    headline=True,
)
