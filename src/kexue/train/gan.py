"""One alternating GAN training step, shared by the GAN posts (1: energy GAN, 2: WGAN, 3: O-GAN).

The step knows nothing about any particular objective: the experiment passes its losses as closures over its
networks (``kexue.losses.gan`` has the pieces), and the step does the bookkeeping every GAN loop repeats::

    step = GANStep(generator=G, critic=D, g_optimizer=opt_g, d_optimizer=opt_d,
                   critic_loss=lambda real, fake, z: (wgan_critic_loss(D(real), D(fake))
                                                      + 10 * gradient_penalty(D, real, fake), {}),
                   generator_loss=lambda fake, z: (wgan_generator_loss(D(fake)), {}),
                   sample_real=lambda: data[torch.randint(len(data), (64,))], sample_z=lambda n: torch.randn(n, 2),
                   n_critic=5, ema=EMA(G, 0.999))
    rt = Runtime(run, config=asdict(cfg), model=step.modules(), optimizer=step.optimizers(), ema=step.ema)
    rt.resume()
    for it in rt.steps(cfg.steps, desc="wgan-gp", log_every=50):
        it.mean(**step(rt))

Per call: ``n_critic`` critic updates on fresh real batches and detached generated samples (each followed by the
optional ``after_critic_step``, e.g. weight clipping), then one generator update and the generator's EMA update.
Every update goes through the runtime's NaN guard (``rt.check``), so checkpoint/resume, skip-and-rollback and
rank-0 logging come from :class:`~kexue.train.runtime.Runtime`.

Under ``torchrun`` the gradients are averaged across ranks by hand (:func:`kexue.train.distributed.
all_reduce_gradients`) rather than by DDP, whose hooks do not support the double backward of gradient penalties.
Each rank must draw its own real batch and z (seed the global RNG with ``seed + rank`` *after* building the
networks, and call :func:`kexue.train.distributed.broadcast_parameters` so all ranks start from rank 0's weights).
Real batches and z come from the global RNG, whose state is checkpointed, so a resumed run draws what the
uninterrupted one drew.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kexue.errors import KexueError
from kexue.losses.gan import wgan_critic_loss, wgan_generator_loss
from kexue.train.distributed import DistInfo, all_reduce_gradients
from kexue.train.ema import EMA
from kexue.train.runtime import Runtime

# (real, fake, z) -> (loss, scalars to log); ``fake`` = G(z) detached.
CriticLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
# (fake, z) -> (loss, scalars to log); ``fake`` = G(z) with its graph.
GeneratorLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def _scalar(value: torch.Tensor | float) -> float:
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)


@dataclass
class GANStep:
    """Alternating critic / generator updates (see the module docstring).

    Attributes:
        generator, critic: the two networks.
        g_optimizer: the generator's optimiser, or None to keep the generator fixed (a critic-only run, e.g. to
            estimate W1 between the data and a fixed model). It may also hold the parameters of auxiliary networks
            that train with the generator (MEG's statistics network); pass those in ``extra_modules``.
        d_optimizer: the critic's optimiser.
        critic_loss, generator_loss: the objectives (see ``CriticLoss`` / ``GeneratorLoss``).
        sample_real: ``() -> [B, ...]`` a real batch; sample_z: ``(B) -> [B, z_dim]`` latent codes.
        n_critic: critic updates per generator update.
        after_critic_step: called after each critic update (e.g. ``lambda: clip_weights_(D, 0.01)``).
        ema: an EMA of the generator, updated after each generator update.
        extra_modules: other trained networks, checkpointed with the two (name -> module).
        dist: this process's place under torchrun (gradients are all-reduced when distributed).
    """

    generator: nn.Module
    critic: nn.Module
    g_optimizer: torch.optim.Optimizer | None
    d_optimizer: torch.optim.Optimizer
    critic_loss: CriticLoss
    generator_loss: GeneratorLoss
    sample_real: Callable[[], torch.Tensor]
    sample_z: Callable[[int], torch.Tensor]
    n_critic: int = 1
    after_critic_step: Callable[[], None] | None = None
    ema: EMA | None = None
    extra_modules: dict[str, nn.Module] | None = None
    dist: DistInfo | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise KexueError(f"n_critic must be a positive int, got {self.n_critic!r}")
        self.dist = self.dist or DistInfo()

    def modules(self) -> nn.ModuleDict:
        """Every trained network in one module, for :class:`Runtime` (checkpoints, NaN checks of all gradients)."""
        return nn.ModuleDict({"generator": self.generator, "critic": self.critic, **(self.extra_modules or {})})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"critic": self.d_optimizer}
        if self.g_optimizer is not None:
            opts["generator"] = self.g_optimizer
        return opts

    def _update(self, rt: Runtime, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        loss.backward()
        all_reduce_gradients((p for group in optimizer.param_groups for p in group["params"]), self.dist)
        if not rt.check(loss):
            return False
        optimizer.step()
        return True

    def __call__(self, rt: Runtime) -> dict[str, float]:
        """One generator iteration. Returns the mean of each logged scalar over the critic updates, and the
        generator's; ``skipped`` = 1 if the NaN guard stopped the iteration (the runtime logged what it did)."""
        logs: dict[str, float] = {}
        trained = self.modules()
        for _ in range(self.n_critic):
            real = self.sample_real()
            z = self.sample_z(real.shape[0])
            with torch.no_grad():
                fake = self.generator(z)
            trained.zero_grad(set_to_none=True)
            loss, extra = self.critic_loss(real, fake, z)
            if not self._update(rt, loss, self.d_optimizer):
                return {**logs, "skipped": 1}
            if self.after_critic_step is not None:
                self.after_critic_step()
            for key, value in {"critic_loss": loss, **extra}.items():
                logs[key] = logs.get(key, 0.0) + _scalar(value) / self.n_critic
        if self.g_optimizer is None:
            return logs
        z = self.sample_z(real.shape[0])
        trained.zero_grad(set_to_none=True)
        # The critic's parameters get gradients here too; they are discarded (zeroed before its next update).
        loss, extra = self.generator_loss(self.generator(z), z)
        if not self._update(rt, loss, self.g_optimizer):
            return {**logs, "skipped": 1}
        if self.ema is not None:
            self.ema.update(self.generator)
        logs.update({k: _scalar(v) for k, v in {"generator_loss": loss, **extra}.items()})
        return logs


# (real, fake) -> (the penalty added to the critic's loss, scalars to log)
Penalty = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor | float]]]


def wgan_step(generator: nn.Module, critic: nn.Module, g_optimizer: torch.optim.Optimizer | None,
              d_optimizer: torch.optim.Optimizer, *, sample_real: Callable[[], torch.Tensor],
              sample_z: Callable[[int], torch.Tensor], penalty: Penalty, estimate_name: str = "w_estimate",
              n_critic: int = 5, after_critic_step: Callable[[], None] | None = None, ema: EMA | None = None,
              dist: DistInfo | None = None) -> GANStep:
    """A WGAN step (Arjovsky et al. 2017): the critic maximises E_p f − E_q f minus ``penalty`` (what keeps it about
    1-Lipschitz: a gradient penalty, or zero where clipping or spectral norm constrain the weights), the generator
    maximises E_q f. Its critic f is high on real data.

    Args:
        penalty: ``(real, fake) -> (penalty, scalars to log)``; the penalty is added to the critic's loss as is
            (weight it inside).
        estimate_name: the logged name of the batch's E_p f − E_q f (the critic's W1 estimate).
        Others: as :class:`GANStep`.
    """

    def critic_loss(real: torch.Tensor, fake: torch.Tensor, z: torch.Tensor):
        estimate = -wgan_critic_loss(critic(real), critic(fake))  # E_p f − E_q f on this batch
        value, logs = penalty(real, fake)
        return -estimate + value, {estimate_name: estimate.detach(), **logs}

    return GANStep(generator=generator, critic=critic, g_optimizer=g_optimizer, d_optimizer=d_optimizer,
                   critic_loss=critic_loss, generator_loss=lambda fake, z: (wgan_generator_loss(critic(fake)), {}),
                   sample_real=sample_real, sample_z=sample_z, n_critic=n_critic, after_critic_step=after_critic_step,
                   ema=ema, dist=dist)
