"""NVAE's objective and schedules, apart from the network (post 7; arXiv:2007.03898, §3.2, §4 and the official code).

The official code spreads these over ``train.py`` and ``utils.py``; here each is a small function with its own tests:

- :func:`residual_normal_kl` (the paper's Eq. 2) and its generic twin :func:`gaussian_kl`; :func:`group_kl` picks
  the closed form, or the one-sample estimate ``log q - log p`` for a group with a flow.
- :func:`kl_warmup`: β_t = max(min((t - 0.0001 T) / (0.3 T), 1), 1e-4).
- :func:`kl_balance_alphas` / :func:`kl_balance`: while β < 1 each group's KL is weighted by a detached coefficient
  ∝ (mean |KL_l| + 0.01) / α_l with α_l ∝ 4^s / (groups at scale s) (s = 0 at the coarsest scale), normalised to
  mean 1, so high-KL groups are pushed down and low-KL groups encouraged to carry information (the maintainer's
  explanation, NVlabs/NVAE issue 26). After the warm-up the KL is a plain sum.
- :class:`SpectralRegularizer`: λ Σ_i s_i, s_i the largest singular value of conv i's weight (``C_out ×
  C_in k²``, after weight normalisation), estimated by power iteration batched over the layers of one shape,
  with the singular-vector estimates kept between steps (4 iterations per step, 40 the first time). They are
  buffers, so a checkpoint restores them. :func:`spectral_norm_reference` is the plain loop it is tested against.
- :func:`bn_regularizer`: Σ over BatchNorm layers of max_c |γ_c|; :func:`norm_coeff` anneals λ log-linearly.
- :func:`nelbo_terms`: reconstruction + β · balanced KL per example (everything in float32).
- :func:`adamax` and :func:`warmup_cosine_schedule`: Adamax (eps 1e-3, weight decay 3e-4) with a linear LR warm-up,
  then cosine decay to ``lr_min``.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kexue.models.nvae.cells import Conv2d
from kexue.models.nvae.flows import MaskedConv2d
from kexue.models.nvae.model import LatentGroup, NVAEOutput

# --- KL terms ----------------------------------------------------------------------------------------------------


def gaussian_kl(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(μ_q, σ_q²) || N(μ_p, σ_p²)) = log(σ_p/σ_q) + (σ_q² + (μ_q - μ_p)²) / (2σ_p²) - 1/2."""
    return torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5


def residual_normal_kl(delta_mu: torch.Tensor, delta_sigma: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """Elementwise KL of the residual Normal q = N(μ + Δμ, σ²Δσ²) from p = N(μ, σ²) (NVAE Eq. 2):

    .. math:: \\tfrac12\\big(\\Delta\\mu^2/\\sigma^2 + \\Delta\\sigma^2 - \\log\\Delta\\sigma^2 - 1\\big)

    It does not involve μ: the posterior only has to learn how it differs from the prior.
    """
    d2 = delta_sigma * delta_sigma
    return 0.5 * (delta_mu * delta_mu / (sigma_p * sigma_p) + d2 - torch.log(d2) - 1)


def group_kl(group: LatentGroup) -> torch.Tensor:
    """KL(q(z_l|x, z_<l) || p(z_l|z_<l)) of one group, summed over its dimensions, ``[B]`` nats.

    Closed form (residual Normal) without a flow; with one, the one-sample estimate log q(z) - log p(z).
    """
    if group.flow:
        return group.log_q - group.log_p
    q, p = group.q, group.p
    kl = residual_normal_kl(q.mu - p.mu, q.sigma / p.sigma, p.sigma)
    return kl.flatten(1).sum(1)


# --- schedules ---------------------------------------------------------------------------------------------------


def kl_warmup(step: int, total_steps: int, anneal_portion: float = 0.3, const_portion: float = 1e-4,
              min_coeff: float = 1e-4) -> float:
    """β_t = clip((t - const_portion·T) / (anneal_portion·T), min_coeff, 1): 1e-4 at the start, 1 from ≈ 0.3 T."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not (0 < anneal_portion <= 1 and 0 <= const_portion < 1 and 0 <= min_coeff <= 1):
        raise ValueError(f"need 0 < anneal_portion <= 1, 0 <= const_portion < 1, 0 <= min_coeff <= 1; got "
                         f"{anneal_portion}, {const_portion}, {min_coeff}")
    beta = (step - const_portion * total_steps) / (anneal_portion * total_steps)
    return max(min(beta, 1.0), min_coeff)


def norm_coeff(beta: float, coeff: float, coeff_init: float | None = None) -> float:
    """λ_t for the spectral and BN regularisers: ``coeff``, or annealed log-linearly from ``coeff_init`` with the KL
    warm-up, log λ_t = (1 - β) log λ_init + β log λ (NVAE's ``--weight_decay_norm_anneal``)."""
    if coeff_init is None:
        return coeff
    if coeff <= 0 or coeff_init <= 0:
        raise ValueError(f"an annealed coefficient needs coeff > 0 and coeff_init > 0, got {coeff}, {coeff_init}")
    return math.exp((1 - beta) * math.log(coeff_init) + beta * math.log(coeff))


def kl_balance_alphas(groups_per_scale: list[int]) -> torch.Tensor:
    """α_l ∝ 4^s / (groups at scale s), in decoder order (s = 0: the coarsest scale), normalised so min α = 1.

    Args:
        groups_per_scale: group counts per scale, finest first (``NVAE.groups_per_scale``).

    Returns:
        ``[L]`` float32: 4^s is the spatial size of a scale-s group relative to the coarsest one.
    """
    if not groups_per_scale or any(g < 1 for g in groups_per_scale):
        raise ValueError(f"groups_per_scale must be a non-empty list of positive counts, got {groups_per_scale}")
    coarse_first = list(reversed(groups_per_scale))
    alpha = torch.cat([torch.full((g,), 4.0**s / g) for s, g in enumerate(coarse_first)])
    return alpha / alpha.min()


def kl_balance(kl_all: torch.Tensor, alpha: torch.Tensor, beta: float,
               balance: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """KL per example with NVAE's balancing coefficients γ_l while β < 1.

    Args:
        kl_all: ``[B, L]`` KL per example and group (nats).
        alpha: ``[L]`` from :func:`kl_balance_alphas`.
        beta: the warm-up coefficient β_t; balancing applies only while β < 1.
        balance: False for a plain sum throughout.

    Returns:
        ``(kl [B], gamma [L])`` with kl = Σ_l γ_l KL_l, γ detached and of mean 1 (all ones without balancing).
    """
    if kl_all.dim() != 2 or alpha.shape != kl_all.shape[1:]:
        raise ValueError(f"kl_all must be [B, L] and alpha [L]; got {tuple(kl_all.shape)} and {tuple(alpha.shape)}")
    if not balance or beta >= 1.0:
        return kl_all.sum(1), torch.ones_like(alpha)
    gamma = (kl_all.detach().abs().mean(0) + 0.01) / alpha.to(kl_all)
    gamma = gamma / gamma.mean()
    return (kl_all * gamma).sum(1), gamma


@dataclass
class NELBOTerms:
    """Per-example terms of the training objective: ``loss = recon + beta * kl_balanced`` (all ``[B]``);
    ``kl`` is the unweighted KL per group ``[B, L]`` and ``gamma`` the balancing coefficients ``[L]``."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    kl_balanced: torch.Tensor
    gamma: torch.Tensor

    @property
    def nelbo(self) -> torch.Tensor:
        """The negative ELBO per example (β = 1, no balancing), ``[B]`` nats."""
        return self.recon + self.kl.sum(1)


def nelbo_terms(output: NVAEOutput, x: torch.Tensor, likelihood, alpha: torch.Tensor, beta: float = 1.0,
                balance: bool = True) -> NELBOTerms:
    """NVAE's per-example objective ``-log p(x|z) + β Σ_l γ_l KL_l``.

    Args:
        output: the model's forward pass on ``x``.
        x: the images ``[B, C, H, W]`` the likelihood scores.
        likelihood: ``model.likelihood(output.params)``.
        alpha, beta, balance: see :func:`kl_balance`.
    """
    recon = -likelihood.log_prob(x).flatten(1).sum(1)
    kl_all = torch.stack([group_kl(g) for g in output.groups], dim=1)
    kl, gamma = kl_balance(kl_all, alpha, beta, balance)
    return NELBOTerms(recon + beta * kl, recon, kl_all, kl, gamma)


# --- spectral regularisation -------------------------------------------------------------------------------------


def _weight_matrix(layer: nn.Module) -> torch.Tensor:
    w = layer.normalized_weight() if hasattr(layer, "normalized_weight") else layer.weight
    return w.reshape(w.shape[0], -1)  # [C_out, C_in/groups · k · k]


def spectral_norm_reference(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                            iterations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slow twin of the batched power iteration, for one matrix ``[R, C]`` and unit vectors ``u [R]``, ``v [C]``.

    Returns:
        ``(sigma, u, v)`` with σ = uᵀ W v after ``iterations`` steps v ← Wᵀu/|·|, u ← Wv/|·|.
    """
    w = weight.detach()
    for _ in range(iterations):
        v = F.normalize(w.t() @ u, dim=0, eps=1e-3)
        u = F.normalize(w @ v, dim=0, eps=1e-3)
    return u @ weight @ v, u, v


class SpectralRegularizer(nn.Module):
    """L_SR = Σ_i s_i over the conv layers of ``model`` (every :class:`~kexue.models.nvae.cells.Conv2d` and flow
    :class:`~kexue.models.nvae.flows.MaskedConv2d`), s_i = the top singular value of the normalised weight.

    The estimates u, v of the singular vectors are kept per weight shape, ``[N, rows]`` and ``[N, cols]`` for the N
    layers of that shape, and persist between calls as buffers (so checkpoints carry them). The first call runs
    ``first_iterations`` power-iteration steps from random unit vectors, later calls ``iterations``. The returned
    sum is differentiable in the weights (u, v held fixed), so ``λ · regularizer()`` can be added to the loss.

    Two ways to run the iteration, identical in value: ``batched`` (the default, as in the official code) stacks
    the weights of a shape and runs batched row-vector products, few kernel launches; otherwise each layer runs its
    own matrix-vector products, which avoids copying every weight into the stack once per call (on a CPU that copy
    can cost about what the saved launches do; ``benchmarks/bench_nvae.py`` times both).

    Args:
        model: the network whose conv layers to regularise (read at construction; the regulariser holds references
            to its layers, not a copy).
        iterations, first_iterations: power-iteration steps per call (NVAE: 4 and 40).
        generator: for the initial vectors.
        batched: stack the weights of a shape (True) or iterate per layer (False).
    """

    def __init__(self, model: nn.Module, iterations: int = 4, first_iterations: int = 40,
                 generator: torch.Generator | None = None, batched: bool = True) -> None:
        super().__init__()
        if iterations < 1 or first_iterations < 1:
            raise ValueError(f"iterations and first_iterations must be >= 1, got {iterations}, {first_iterations}")
        self.iterations, self.first_iterations = iterations, first_iterations
        self._layers = [m for m in model.modules() if isinstance(m, Conv2d | MaskedConv2d)]
        if not self._layers:
            raise ValueError("SpectralRegularizer: the model has no Conv2d / MaskedConv2d layers")
        shapes: dict[tuple[int, int], list[int]] = {}
        for i, layer in enumerate(self._layers):
            shapes.setdefault(tuple(_weight_matrix(layer).shape), []).append(i)
        self._groups = list(shapes.items())  # ((rows, cols), layer indices)
        device = self._layers[0].weight.device
        self.batched = batched
        for g, ((rows, cols), idx) in enumerate(self._groups):
            u = torch.randn(len(idx), rows, generator=generator).to(device)
            v = torch.randn(len(idx), cols, generator=generator).to(device)
            self.register_buffer(f"u{g}", F.normalize(u, dim=1, eps=1e-3))
            self.register_buffer(f"v{g}", F.normalize(v, dim=1, eps=1e-3))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _iterate_batched(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n: int):
        """``n`` steps on stacked weights ``[N, R, C]``; row-vector products only (bmm's fast case)."""
        wt = w.transpose(1, 2)
        for _ in range(n):
            v = F.normalize(torch.bmm(u.unsqueeze(1), w).squeeze(1), dim=1, eps=1e-3)  # [N, C]
            u = F.normalize(torch.bmm(v.unsqueeze(1), wt).squeeze(1), dim=1, eps=1e-3)  # [N, R]
        return u, v

    def forward(self) -> torch.Tensor:
        """Run the power iterations and return Σ_i s_i (a scalar with gradients to the weights)."""
        n_iter = self.first_iterations if int(self.calls) == 0 else self.iterations
        total = 0.0
        for g, (_, idx) in enumerate(self._groups):
            mats = [_weight_matrix(self._layers[i]).float() for i in idx]  # each [R, C]
            u_buf, v_buf = getattr(self, f"u{g}"), getattr(self, f"v{g}")
            if self.batched:
                w = torch.stack(mats)  # [N, R, C]
                with torch.no_grad():
                    u, v = self._iterate_batched(w.detach(), u_buf, v_buf, n_iter)
                sigma = (torch.bmm(u.unsqueeze(1), w).squeeze(1) * v).sum(1)  # uᵀ W v, [N]
            else:
                with torch.no_grad():
                    us, vs = [], []
                    for r, m in enumerate(mats):
                        ur, vr, md = u_buf[r], v_buf[r], m.detach()
                        for _ in range(n_iter):
                            vr = F.normalize(ur @ md, dim=0, eps=1e-3)
                            ur = F.normalize(md @ vr, dim=0, eps=1e-3)
                        us.append(ur)
                        vs.append(vr)
                    u, v = torch.stack(us), torch.stack(vs)
                sigma = torch.stack([(u[r] @ m) @ v[r] for r, m in enumerate(mats)])
            with torch.no_grad():
                u_buf.copy_(u)
                v_buf.copy_(v)
            total = total + sigma.sum()
        self.calls += 1
        return total

    @torch.no_grad()
    def singular_values(self) -> torch.Tensor:
        """The current estimates s_i of every layer (no iteration), ``[num_layers]`` in the model's module order."""
        out = torch.empty(len(self._layers))
        for g, (_, idx) in enumerate(self._groups):
            u, v = getattr(self, f"u{g}"), getattr(self, f"v{g}")
            for r, i in enumerate(idx):
                out[i] = (u[r] @ _weight_matrix(self._layers[i]).float() @ v[r]).item()
        return out


def bn_regularizer(model: nn.Module) -> torch.Tensor:
    """L_BN = Σ over affine BatchNorm layers of max_c |γ_c| (the official code's ``batchnorm_loss``)."""
    terms = [m.weight.abs().max() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.affine]
    if not terms:
        raise ValueError("bn_regularizer: the model has no affine BatchNorm layers")
    return torch.stack(terms).sum()


# --- optimiser -------------------------------------------------------------------------------------------------


def adamax(params, lr: float = 1e-2, weight_decay: float = 3e-4, eps: float = 1e-3) -> torch.optim.Adamax:
    """NVAE's optimiser: Adamax with eps 1e-3 and weight decay 3e-4."""
    return torch.optim.Adamax(params, lr=lr, weight_decay=weight_decay, eps=eps)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, lr: float, lr_min: float) -> float:
    """The learning rate at ``step``: linear warm-up to ``lr`` over ``warmup_steps`` (reaching it at step
    ``warmup_steps - 1``), then cosine decay to ``lr_min`` at ``total_steps``."""
    if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {total_steps}, "
                         f"{warmup_steps}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                           lr_min: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine` relative to each group's initial lr (call ``step()`` once per
    training step)."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    if any(lr_min > lr for lr in lrs):
        raise ValueError(f"lr_min ({lr_min}) must not exceed the initial learning rates {lrs}")
    factors = [lambda s, lr=lr: warmup_cosine(s, total_steps, warmup_steps, lr, lr_min) / lr for lr in lrs]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
