r"""Gradient-based MCMC for any differentiable energy: unadjusted Langevin, MALA, and a replay buffer (post 1).

Su Jianlin, "能量视角下的GAN模型（二）：GAN＝“分析”＋“采样”" (kexue.fm/archives/6331); Kumar et al., "Maximum
Entropy Generators for Energy-Based Models" (MEG, arXiv:1901.08508), §4; Du & Mordatch, "Implicit Generation and
Generalization in Energy-Based Models" (IGEBM, arXiv:1903.08689), as summarised in kexue.fm/archives/6612.

The target is :math:`\pi(x)\propto e^{-V(x)}` with the *potential*

.. math::  V(x) = U(x)/T + \tfrac12\|x\|^2\,[\text{prior}],

where ``energy`` computes :math:`U` per sample (``[B, ...] -> [B]``; e.g. :math:`U(G(z))` for a GAN's latent space,
or the energy network itself in data space), :math:`T` is the temperature and the optional term is the
:math:`-\log\mathcal N(0, I)` latent prior (**an inferred option**: neither Su nor MEG uses it; with it, :math:`T\to
\infty` gives back plain prior sampling). Note MEG's code calls :math:`\beta=1/T` "temp" (it *multiplies* the
energy), so its ``temp=0.1`` is ``temperature=10`` here.

- :func:`langevin`: unadjusted Langevin, :math:`x' = x - \alpha\nabla V(x) + \sqrt{2\alpha}\,\xi` (MEG's notation;
  Su writes the same chain with :math:`\varepsilon = 2\alpha`). Its stationary law is only
  :math:`\approx\pi` (biased by :math:`O(\alpha)`).
- :func:`mala`: the same proposal with a Metropolis–Hastings test, accepted with probability
  :math:`\min\{1, \pi(x')Q(x\mid x')/[\pi(x)Q(x'\mid x)]\}`, where
  :math:`Q(x'\mid x)\propto\exp(-\|x'-x+\alpha\nabla V(x)\|^2/(4\alpha))` is the proposal's own density. (Su's blog
  writes :math:`2\varepsilon` in the denominator with the :math:`\varepsilon` drift, which does not match his
  :math:`\varepsilon/2` drift; MEG's corrected sampler takes a norm where the square belongs. Both are off; this is
  the consistent form.) ``correction="energy"`` keeps only :math:`\pi(x')/\pi(x)` (the EnGAN text's rule, MEG's
  ``MALA_sampler``), which is *not* exact for an asymmetric proposal and is here for comparison.
  Optional step-size adaptation drives the mean acceptance probability to a target during a burn-in.
  :func:`mala_reference` is the per-chain slow twin (normalised Gaussian densities from ``torch.distributions``).
- :class:`ReplayBuffer` and :func:`replay_langevin`: IGEBM's data-space sampler; negatives start from a buffer of
  past samples (95%) or from uniform noise (5%), take K Langevin steps, and go back into the buffer. The energy they
  train with is :func:`kexue.losses.energy.igebm_loss`. Sign question: Su (post 6612) writes the regulariser as
  :math:`+\lambda(U^2(x_r) - U^2(x_f))`, while the IGEBM paper is recalled as :math:`+\lambda(U^2(x_r) +
  U^2(x_f))`; with the minus the loss is unbounded below in the fake energies, so the plus is the default and the
  minus an option (``sign="su"``). The sampler itself is sign-free: it always descends :math:`U`.

Chains are batched: ``energy`` must treat samples independently (put batch-norm layers in eval mode), because the
gradient of the summed energy is used as every chain's own gradient.
"""

import math
from collections.abc import Callable
from typing import Any

import torch

Energy = Callable[[torch.Tensor], torch.Tensor]  # [B, ...] -> [B]

CORRECTIONS = ("mh", "energy")

# --------------------------------------------------------------------------------------------------------------
# The potential and its gradient
# --------------------------------------------------------------------------------------------------------------


def _check_common(x: torch.Tensor, step: float, n_steps: int, temperature: float) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0 or not x.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor [B, ...] with B > 0 chains, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not (isinstance(step, int | float) and math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a finite number > 0, got {step!r}")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def potential(energy: Energy, x: torch.Tensor, *, temperature: float = 1.0,
              prior: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The potential :math:`V = U/T + \tfrac12\|x\|^2[\text{prior}]`, its gradient, and the raw energy.

    Args:
        energy: ``[B, ...] -> [B]``, differentiable, samples independent.
        x: ``[B, ...]`` states (detached here).
        temperature: :math:`T > 0`.
        prior: add the standard-normal prior term.

    Returns:
        ``(V [B], grad_x V [B, ...], U [B])``, all detached.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        u = energy(x)
        if u.shape != (x.shape[0],):
            if u.shape == (x.shape[0], 1):
                u = u.squeeze(1)
            else:
                raise ValueError(f"energy must return one value per chain, [B] = [{x.shape[0]}], got "
                                 f"{tuple(u.shape)}")
        v = u / temperature
        if prior:
            v = v + 0.5 * x.flatten(1).pow(2).sum(1)
        # chains are independent, so d(sum_b V_b)/dx_b = dV_b/dx_b
        (grad,) = torch.autograd.grad(v.sum(), x)
    return v.detach(), grad.detach(), u.detach()


# --------------------------------------------------------------------------------------------------------------
# Unadjusted Langevin
# --------------------------------------------------------------------------------------------------------------


def langevin(energy: Energy, x0: torch.Tensor, *, step: float, n_steps: int, temperature: float = 1.0,
             prior: bool = False, noise_scale: float = 1.0, bounds: tuple[float, float] | None = None,
             generator: torch.Generator | None = None, trace: bool = False,
             log: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    r"""Unadjusted Langevin dynamics :math:`x' = x - \alpha\nabla V(x) + s\sqrt{2\alpha}\,\xi`.

    With ``noise_scale`` :math:`s=1` the chain samples :math:`\pi\propto e^{-V}` up to an :math:`O(\alpha)` bias
    (for :math:`V=\|x\|^2/2` the stationary variance is :math:`1/(1-\alpha/2)`). IGEBM uses a smaller noise
    (:math:`s<1`) and clamps to the data range (``bounds``): that samples a colder, truncated law, not :math:`\pi`.

    Args:
        energy: ``[B, ...] -> [B]``.
        x0: ``[B, ...]`` initial states, one chain per row.
        step: :math:`\alpha > 0` (Su's :math:`\varepsilon/2`).
        n_steps: number of updates.
        temperature, prior: see :func:`potential`.
        noise_scale: :math:`s \ge 0`.
        bounds: ``(low, high)`` to clamp every state to, or None.
        generator: for the noise.
        trace: keep every state in ``log["trace"]`` (``[n_steps + 1, B, ...]`` on the CPU).
        log: also return the log dict.

    Returns:
        The final states ``[B, ...]``; with ``log=True`` also ``{"energy": [n_steps + 1] mean U per step,
        "trace"?}``.
    """
    _check_common(x0, step, n_steps, temperature)
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
    if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    x = x0.detach().clone()
    if bounds is not None:
        x = x.clamp(*bounds)
    _, grad, u = potential(energy, x, temperature=temperature, prior=prior)
    energies, states = [u.mean().item()], [x.cpu()] if trace else None
    for _ in range(n_steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x - step * grad + noise_scale * math.sqrt(2 * step) * noise
        if bounds is not None:
            x = x.clamp(*bounds)
        _, grad, u = potential(energy, x, temperature=temperature, prior=prior)
        energies.append(u.mean().item())
        if trace:
            states.append(x.cpu())
    if not log:
        return x
    out: dict[str, Any] = {"energy": torch.tensor(energies)}
    if trace:
        out["trace"] = torch.stack(states)
    return x, out


# --------------------------------------------------------------------------------------------------------------
# MALA
# --------------------------------------------------------------------------------------------------------------


def log_proposal(x_to: torch.Tensor, x_from: torch.Tensor, grad_from: torch.Tensor, step: float) -> torch.Tensor:
    r""":math:`\log Q(x_{to}\mid x_{from})` up to the constant shared by both directions:
    :math:`-\|x_{to}-x_{from}+\alpha\nabla V(x_{from})\|^2/(4\alpha)`, per chain ``[B]``."""
    return -(x_to - x_from + step * grad_from).flatten(1).pow(2).sum(1) / (4 * step)


def mh_log_ratio(v: torch.Tensor, v_new: torch.Tensor, x: torch.Tensor, x_new: torch.Tensor, grad: torch.Tensor,
                 grad_new: torch.Tensor, step: float, correction: str = "mh") -> torch.Tensor:
    r"""Log acceptance ratio :math:`\log[\pi(x')Q(x\mid x')/(\pi(x)Q(x'\mid x))]` per chain ``[B]``.

    ``correction="energy"`` drops the proposal terms (the uncorrected rule, not exact).
    """
    ratio = v - v_new
    if correction == "mh":
        ratio = ratio + log_proposal(x, x_new, grad_new, step) - log_proposal(x_new, x, grad, step)
    elif correction != "energy":
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    return ratio


def _check_mala(correction: str, target_accept: float | None, adapt_steps: int | None, n_steps: int,
                adapt_rate: float) -> int:
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if target_accept is None:
        if adapt_steps:
            raise ValueError("adapt_steps was given without target_accept (the acceptance rate to adapt to)")
        return 0
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if not (math.isfinite(adapt_rate) and adapt_rate > 0):
        raise ValueError(f"adapt_rate must be a finite number > 0, got {adapt_rate!r}")
    if adapt_steps is None:
        return n_steps // 2
    if not isinstance(adapt_steps, int) or not 0 <= adapt_steps <= n_steps:
        raise ValueError(f"adapt_steps must be an int in [0, n_steps={n_steps}], got {adapt_steps!r}")
    return adapt_steps


def mala(energy: Energy, x0: torch.Tensor, *, step: float, n_steps: int, temperature: float = 1.0,
         prior: bool = False, correction: str = "mh", target_accept: float | None = None,
         adapt_steps: int | None = None, adapt_rate: float = 0.05, generator: torch.Generator | None = None,
         trace: bool = False, log: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict[str, Any]]:
    r"""Metropolis-adjusted Langevin: propose :math:`x' = x - \alpha\nabla V(x) + \sqrt{2\alpha}\xi`, accept with
    the MH probability (see the module docstring). Exact for :math:`\pi\propto e^{-V}` at any step size.

    Step-size adaptation (``target_accept``): for the first ``adapt_steps`` updates (default half of
    ``n_steps``), :math:`\log\alpha \mathrel{+}= r\,(\bar a - a^*)` with :math:`\bar a` the batch-mean acceptance
    *probability* (less noisy than the 0/1 outcomes) and :math:`a^*` the target; afterwards the step is frozen, so
    the rest of the chain is an exact MALA chain. Proposals with a non-finite energy are rejected and counted.

    Args:
        energy: ``[B, ...] -> [B]``.
        x0: ``[B, ...]`` initial states.
        step: initial :math:`\alpha > 0`.
        n_steps: number of MH updates.
        temperature, prior: see :func:`potential`.
        correction: ``"mh"`` (exact) or ``"energy"`` (energy ratio only; not exact).
        target_accept: acceptance rate to adapt the step to (e.g. 0.574, optimal for MALA in high dimension), or
            None for a fixed step.
        adapt_steps: updates during which the step adapts.
        adapt_rate: :math:`r`, the adaptation gain.
        generator: for the proposals and the uniforms.
        trace: keep every state in ``log["trace"]`` (``[n_steps + 1, B, ...]``, CPU).
        log: also return the log dict.

    Returns:
        Final states ``[B, ...]``; with ``log=True`` also ``{"accept_rate" [n_steps] (share of chains that moved),
        "accept_prob" [n_steps] (mean MH probability), "step" [n_steps] (step used), "energy" [n_steps + 1]
        (mean U), "accepted" [B] (moves per chain), "final_step", "nonfinite" (rejected non-finite proposals),
        "trace"?}``.
    """
    _check_common(x0, step, n_steps, temperature)
    adapt_steps = _check_mala(correction, target_accept, adapt_steps, n_steps, adapt_rate)
    x = x0.detach().clone()
    v, grad, u = potential(energy, x, temperature=temperature, prior=prior)
    b = x.shape[0]
    rates, probs, steps, energies = [], [], [], [u.mean().item()]
    accepted = torch.zeros(b, dtype=torch.long, device=x.device)
    states, nonfinite = ([x.cpu()] if trace else None), 0
    for t in range(n_steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        uniform = torch.rand(b, generator=generator, dtype=x.dtype, device=x.device)
        x_new = x - step * grad + math.sqrt(2 * step) * noise
        v_new, grad_new, u_new = potential(energy, x_new, temperature=temperature, prior=prior)
        log_r = mh_log_ratio(v, v_new, x, x_new, grad, grad_new, step, correction)
        finite = torch.isfinite(log_r) & torch.isfinite(grad_new.flatten(1)).all(1)
        nonfinite += int((~finite).sum())
        log_r = torch.where(finite, log_r, torch.full_like(log_r, -math.inf))
        accept = uniform.log() < log_r  # u < min(1, r)
        mask = accept.view(b, *([1] * (x.dim() - 1)))
        x = torch.where(mask, x_new, x)
        grad = torch.where(mask, grad_new, grad)
        v, u = torch.where(accept, v_new, v), torch.where(accept, u_new, u)
        accepted += accept.long()
        prob = log_r.clamp(max=0).exp().mean().item()
        rates.append(accept.double().mean().item())
        probs.append(prob)
        steps.append(step)
        energies.append(u.mean().item())
        if trace:
            states.append(x.cpu())
        if t < adapt_steps:
            step = step * math.exp(adapt_rate * (prob - target_accept))
    if not log:
        return x
    out: dict[str, Any] = {"accept_rate": torch.tensor(rates), "accept_prob": torch.tensor(probs),
                           "step": torch.tensor(steps), "energy": torch.tensor(energies), "accepted": accepted.cpu(),
                           "final_step": step, "nonfinite": nonfinite}
    if trace:
        out["trace"] = torch.stack(states)
    return x, out


def mala_reference(energy: Energy, x0: torch.Tensor, *, step: float, n_steps: int, temperature: float = 1.0,
                   prior: bool = False, correction: str = "mh",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Slow twin of :func:`mala` (fixed step): one chain at a time, with the *normalised* proposal density
    :math:`\\mathcal N(x - \\alpha\\nabla V(x), 2\\alpha I)` from ``torch.distributions`` and the potential
    evaluated per chain. It draws the same random numbers in the same order as :func:`mala`, so with the same
    generator state both return the same chains (up to float rounding)."""
    _check_common(x0, step, n_steps, temperature)
    _check_mala(correction, None, None, n_steps, 1.0)
    b = x0.shape[0]
    chains = [x0[i:i + 1].detach().clone() for i in range(b)]
    sd = math.sqrt(2 * step)

    def v_and_grad(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        v, grad, _ = potential(energy, x, temperature=temperature, prior=prior)
        return v.item(), grad

    for _ in range(n_steps):
        noise = torch.randn((b, *x0.shape[1:]), generator=generator, dtype=x0.dtype, device=x0.device)
        uniform = torch.rand(b, generator=generator, dtype=x0.dtype, device=x0.device)
        for i in range(b):
            x = chains[i]
            v, grad = v_and_grad(x)
            x_new = x - step * grad + sd * noise[i:i + 1]
            v_new, grad_new = v_and_grad(x_new)
            log_r = v - v_new
            if correction == "mh":
                forward = torch.distributions.Normal(x - step * grad, sd).log_prob(x_new).sum()
                backward = torch.distributions.Normal(x_new - step * grad_new, sd).log_prob(x).sum()
                log_r += (backward - forward).item()
            if math.isfinite(log_r) and math.log(uniform[i].item()) < log_r:
                chains[i] = x_new
    return torch.cat(chains)


# --------------------------------------------------------------------------------------------------------------
# IGEBM's replay buffer (data-space sampling)
# --------------------------------------------------------------------------------------------------------------


class ReplayBuffer:
    """A FIFO store of past negative samples for data-space Langevin (IGEBM; post 6612).

    :meth:`sample` starts each chain from a random stored sample, or with probability ``reinit_prob`` (always, while
    the buffer is empty) from uniform noise on ``[low, high]``; :meth:`push` stores the chains' end states,
    overwriting the oldest once ``capacity`` is reached. Persistent chains let a few Langevin steps per training
    step add up to long mixing times.

    Args:
        capacity: samples kept.
        shape: one sample's shape, e.g. ``(2,)`` or ``(1, 28, 28)``.
        low, high: the uniform-noise range (the data range).
        reinit_prob: share of chains started from noise (IGEBM: 0.05).
        generator: for the choices and the noise.
        device, dtype: where the store lives.
    """

    def __init__(self, capacity: int, shape: tuple[int, ...], *, low: float = -1.0, high: float = 1.0,
                 reinit_prob: float = 0.05, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if not 0 <= reinit_prob <= 1:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob!r}")
        if not low < high:
            raise ValueError(f"need low < high for the noise range, got low={low}, high={high}")
        self.capacity, self.shape = capacity, tuple(shape)
        self.low, self.high, self.reinit_prob, self.generator = low, high, reinit_prob, generator
        self.data = torch.empty((capacity, *self.shape), device=device, dtype=dtype)
        self.size = 0  # filled slots
        self.head = 0  # next slot to overwrite

    def __len__(self) -> int:
        return self.size

    def noise(self, n: int) -> torch.Tensor:
        u = torch.rand((n, *self.shape), generator=self.generator, device=self.data.device, dtype=self.data.dtype)
        return self.low + (self.high - self.low) * u

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` starting states ``[n, *shape]`` and a bool mask ``[n]`` of those drawn from noise."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        device = self.data.device
        fresh = torch.rand(n, generator=self.generator, device=device) < self.reinit_prob
        x = self.noise(n)
        if self.size:
            idx = torch.randint(self.size, (n,), generator=self.generator, device=device)
            x = torch.where(fresh.view(n, *([1] * len(self.shape))), x, self.data[idx])
        else:
            fresh = torch.ones(n, dtype=torch.bool, device=device)
        return x, fresh

    def push(self, x: torch.Tensor) -> None:
        """Store ``x`` ``[n, *shape]`` (detached), overwriting the oldest samples when full."""
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"push expects samples of shape [n, {', '.join(map(str, self.shape))}], got "
                             f"{tuple(x.shape)}")
        x = x.detach().to(self.data)[-self.capacity:]
        slots = (self.head + torch.arange(len(x), device=self.data.device)) % self.capacity
        self.data[slots] = x
        self.head = (self.head + len(x)) % self.capacity
        self.size = min(self.capacity, self.size + len(x))


def replay_langevin(energy: Energy, buffer: ReplayBuffer, n: int, *, step: float, n_steps: int,
                    noise_scale: float = 1.0, temperature: float = 1.0, clamp: bool = True) -> torch.Tensor:
    """IGEBM's negative phase: ``n`` chains from ``buffer``, ``n_steps`` of :func:`langevin`, pushed back.

    Args:
        clamp: keep states inside the buffer's ``[low, high]`` (the data range), as IGEBM does.

    Returns:
        The negatives ``[n, *shape]`` (detached).
    """
    x0, _ = buffer.sample(n)
    x = langevin(energy, x0, step=step, n_steps=n_steps, temperature=temperature, noise_scale=noise_scale,
                 bounds=(buffer.low, buffer.high) if clamp else None, generator=buffer.generator)
    buffer.push(x)
    return x
