"""One NVAE training step (post 7; arXiv:2007.03898), with the bookkeeping of the official ``train.py`` made explicit.

The step is a plain callable the experiment's loop calls once per iteration; everything that must survive a kill
lives in the :class:`~kexue.train.runtime.Runtime` (model, spectral-norm vectors, optimiser, scheduler, RNG state,
and the grad scaler's state in ``rt.extra``)::

    step = NVAEStep(model, optimizer, scheduler, batch=lambda t: images_for_step(t), total_steps=T)
    rt = Runtime(run, config=asdict(cfg), model=step.modules(), optimizer=optimizer, scheduler=scheduler, every=500)
    rt.resume()
    for it in rt.steps(T, desc="nvae", log_every=100):
        logs = step(rt)
        it.mean(nelbo=logs["nelbo"], kl=logs["kl"])

Per call: images for the current step (a function of the step, so resume and rollback replay the same data),
β_t = KL warm-up, forward (under autocast when ``amp`` is set), ``-log p(x|z) + β Σ γ_l KL_l`` averaged over the
batch, plus λ_t (spectral + BN regularisers), backward, gradients averaged across ranks by hand (as the official
code does; NVAE keeps BatchNorm statistics per rank), the runtime's NaN guard, the optimiser step and the scheduler
step. A step the guard rejects still advances the schedules (they follow the step counter).

Mixed precision: ``amp="bf16"`` (no scaler needed) or ``"fp16"`` with a ``GradScaler`` starting at 2¹⁰ as in the
official code; an fp16 overflow step is skipped by the guard like any non-finite step and the scaler backs off.
The objective and the regularisers are always computed in float32, outside autocast.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from kexue.losses.vae import (
    NELBOTerms,
    SpectralRegularizer,
    bn_regularizer,
    kl_balance_alphas,
    kl_warmup,
    nelbo_terms,
    norm_coeff,
)
from kexue.models.nvae import NVAE
from kexue.train.distributed import DistInfo, all_reduce_gradients
from kexue.train.runtime import Runtime

AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class NVAEStep:
    """One optimisation step of an :class:`~kexue.models.nvae.NVAE` (see the module docstring).

    Attributes:
        model: the NVAE (unwrapped).
        optimizer: e.g. :func:`kexue.losses.vae.adamax`; scheduler: stepped once per call (or None).
        batch: ``step -> images [B, C, H, W]`` on the model's device (binarised for a Bernoulli likelihood).
        total_steps: T, for the KL warm-up.
        kl_anneal_portion, kl_const_portion, kl_min_coeff: the warm-up (NVAE: 0.3, 1e-4, 1e-4).
        kl_balance: balance the groups' KL while β < 1.
        norm_coeff: λ of the spectral and BN regularisers (0 disables both); norm_coeff_init: anneal λ from this
            value with the warm-up (None: constant).
        power_iterations: spectral-norm power iterations per step (40 on the first).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA only for fp16).
        dist: this process's place under torchrun (gradients are all-reduced when distributed).
    """

    model: NVAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    batch: Callable[[int], torch.Tensor]
    total_steps: int
    kl_anneal_portion: float = 0.3
    kl_const_portion: float = 1e-4
    kl_min_coeff: float = 1e-4
    kl_balance: bool = True
    norm_coeff: float = 1e-2
    norm_coeff_init: float | None = None
    power_iterations: int = 4
    amp: str = "none"
    dist: DistInfo | None = None
    spectral: SpectralRegularizer | None = field(default=None, init=False)
    last: NELBOTerms | None = field(default=None, init=False)  # the terms of the latest step, for reporting

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.norm_coeff < 0:
            raise ValueError(f"norm_coeff must be >= 0, got {self.norm_coeff}")
        self.dist = self.dist or DistInfo()
        device = next(self.model.parameters()).device
        if self.amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device (use 'bf16' or 'none' on CPU)")
        self.alpha = kl_balance_alphas(self.model.groups_per_scale).to(device)
        if self.norm_coeff > 0:
            self.spectral = SpectralRegularizer(self.model, self.power_iterations, 10 * self.power_iterations)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10) if self.amp == "fp16" else None
        self._scaler_loaded = False

    def modules(self) -> nn.ModuleDict:
        """The model and the spectral regulariser's vectors in one module, for :class:`Runtime`."""
        mods = {"vae": self.model}
        if self.spectral is not None:
            mods["spectral"] = self.spectral
        return nn.ModuleDict(mods)

    def __call__(self, rt: Runtime) -> dict[str, float]:
        """One step at ``rt.step``. Returns scalars to log (means over the batch, nats per image)."""
        if self.scaler is not None and not self._scaler_loaded:
            if "grad_scaler" in rt.extra:  # restored by rt.resume() / a rollback
                self.scaler.load_state_dict(rt.extra["grad_scaler"])
            self._scaler_loaded = True
        model, step = self.model, rt.step
        x = self.batch(step)
        beta = kl_warmup(step, self.total_steps, self.kl_anneal_portion, self.kl_const_portion, self.kl_min_coeff)
        lam = norm_coeff(beta, self.norm_coeff, self.norm_coeff_init) if self.norm_coeff > 0 else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16,
                            enabled=self.amp != "none"):
            out = model(x)
        terms = nelbo_terms(out, x, model.likelihood(out.params), self.alpha, beta, self.kl_balance)
        loss = terms.loss.mean()
        total = loss
        sr = bn = torch.zeros((), device=x.device)
        if lam > 0:
            sr, bn = self.spectral(), bn_regularizer(model)
            total = loss + lam * (sr + bn)
        (self.scaler.scale(total) if self.scaler is not None else total).backward()
        all_reduce_gradients(model, self.dist)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        ok = rt.check(total)
        if ok:
            (self.scaler.step(self.optimizer) if self.scaler is not None else self.optimizer.step())
        if self.scaler is not None:
            self.scaler.update()
            rt.extra["grad_scaler"] = self.scaler.state_dict()
        if self.scheduler is not None:
            self.scheduler.step()
        self.last = terms
        recon, kl = terms.recon.detach(), terms.kl.detach()
        return {
            "loss": total.detach().item(), "nelbo": (recon + kl.sum(1)).mean().item(), "recon": recon.mean().item(),
            "kl": kl.sum(1).mean().item(), "beta": beta, "norm_coeff": lam, "spectral": sr.detach().item(),
            "bn": bn.detach().item(), "lr": self.optimizer.param_groups[0]["lr"], "skipped": 0 if ok else 1,
        }
