"""NVAE: a deep hierarchical VAE with a bidirectional encoder (post 7; kexue.fm/archives/7574).

Vahdat & Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder", arXiv:2007.03898. Structure after the official
code (NVlabs/NVAE ``model.py``, commit 9fc1a288), built from an :class:`NVAEConfig` instead of an argparse namespace.

Data flow, for an image x of ``image_size`` pixels (padded by ``padding`` on each side):

1. **Bottom-up encoder.** ``stem`` (3×3 conv on 2x - 1) → ``pre_process`` blocks (cells, the last one halving the
   resolution) → ``enc_tower``: for each latent scale from the finest, one block of cells per group, whose output
   is recorded as that group's encoder feature; a ``down_enc`` cell between scales. The last feature goes through
   ``enc0`` (ELU, 1×1 conv, ELU) and gives the top group's posterior.
2. **Top-down tower, shared by q(z|x) and p(z).** The decoder state starts from a learned constant ``h``. For each
   group l (coarsest scale first): decoder cells, then the *prior head* ``p(z_l | z_<l)`` (ELU + 1×1 conv on the
   state); while encoding, the *posterior head* (3×3 conv on ``EncoderCombiner(feature_l, state)``) outputs
   residual parameters ``(Δμ, log Δσ)`` added to the prior's before the clamps; sample ``z_l`` (through the
   optional flow); ``DecoderCombiner`` mixes it into the state. An ``up_dec`` cell between scales.
   The same modules run in :meth:`NVAE.forward` (posterior path) and :meth:`NVAE.sample` (prior path): one set of
   weights.
3. **Output.** ``post_process`` blocks (the first cell of each doubles the resolution), then ELU + 3×3 conv to the
   likelihood's parameters, cropped back to ``image_size``.

Groups per scale: with ``adaptive_groups``, the finest scale has ``groups_per_scale`` groups and each coarser one half
as many (at least ``min_groups_per_scale``). Channels double at every halving of the resolution.

Objectives (KL, warm-up, balancing, spectral and BN regularisers) live in :mod:`kexue.losses.vae`; the model returns
the per-group distributions they need.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kexue.models.nvae.cells import BNSwish, Cell, Conv2d, DecoderCombiner, EncoderCombiner
from kexue.models.nvae.distributions import (
    Bernoulli,
    DiscretizedLogisticMixture,
    Normal,
    logistic_mixture_channels,
)
from kexue.models.nvae.flows import PairedFlow

LIKELIHOODS = ("bernoulli", "logistic_mixture")

# --- config ------------------------------------------------------------------------------------------------------


@dataclass
class NVAEConfig:
    """Architecture of an :class:`NVAE`. Defaults: the paper's MNIST model (README command, no flows).

    Spatial sizes: the padded side ``image_size + 2 * padding`` is halved ``num_preprocess_blocks`` times before
    the finest latent scale and once more between latent scales, so it must be divisible by
    ``2 ** (num_preprocess_blocks + num_latent_scales - 1)``; the coarsest latent scale has that side divided by it.
    """

    image_channels: int = 1  # 1 (grey) or 3 (RGB)
    image_size: int = 28  # square images of this side, in pixels
    padding: int = 2  # zero pixels added on each side before the stem (MNIST: 28 -> 32), cropped from the output
    likelihood: str = "bernoulli"  # "bernoulli" (binarised pixels) or "logistic_mixture"
    num_mix: int = 10  # logistic mixture components
    num_bits: int = 8  # pixel depth for the logistic mixture (5 for the 256-px sets)
    enc_channels: int = 32  # encoder channels at the stem's resolution (doubled at every halving)
    dec_channels: int = 32  # decoder channels at the stem's resolution
    num_preprocess_blocks: int = 2  # encoder blocks before the latents, each ending with a ×1/2 cell
    num_preprocess_cells: int = 3  # cells per pre-processing block
    num_postprocess_blocks: int = 2  # decoder blocks after the latents, each starting with a ×2 cell
    num_postprocess_cells: int = 3  # cells per post-processing block
    num_latent_scales: int = 2  # resolutions that carry latent groups
    groups_per_scale: int = 10  # groups at the finest latent scale
    adaptive_groups: bool = True  # halve the group count at each coarser scale
    min_groups_per_scale: int = 1  # floor of the adaptive group counts
    latent_channels: int = 20  # channels of every latent group
    enc_cells_per_group: int = 2  # encoder cells before each group's feature
    dec_cells_per_group: int = 2  # decoder cells before each group's prior (none before the first group)
    num_flows: int = 0  # paired IAF cells per group (0 for MNIST)
    use_se: bool = True  # squeeze-excitation in every cell
    checkpointing: bool = False  # recompute BN-Swish outputs in the backward pass (saves memory)

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot work."""
        positive = ("image_channels", "image_size", "enc_channels", "dec_channels", "num_latent_scales",
                    "groups_per_scale", "min_groups_per_scale", "latent_channels", "num_preprocess_cells",
                    "num_postprocess_cells", "num_mix", "num_bits")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"NVAEConfig.{name} must be a positive int, got {value!r}")
        for name in ("padding", "num_preprocess_blocks", "num_postprocess_blocks", "enc_cells_per_group",
                     "dec_cells_per_group", "num_flows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"NVAEConfig.{name} must be a non-negative int, got {value!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"NVAEConfig.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        for name in ("enc_channels", "dec_channels"):
            if getattr(self, name) % 2:
                raise ValueError(f"NVAEConfig.{name} must be even (got {getattr(self, name)}): channels double at "
                                 "each halving of the resolution and the factorised-reduce skip splits 2·C into "
                                 "four equal parts")
        if self.num_postprocess_blocks != self.num_preprocess_blocks:
            raise ValueError(f"NVAEConfig.num_postprocess_blocks ({self.num_postprocess_blocks}) must equal "
                             f"num_preprocess_blocks ({self.num_preprocess_blocks}) so the output has the input's "
                             "resolution")
        factor = self.downsampling
        side = self.image_size + 2 * self.padding
        if side % factor:
            raise ValueError(f"image size {self.image_size} + 2 * padding {self.padding} = {side} must be divisible "
                             f"by 2 ** (num_preprocess_blocks + num_latent_scales - 1) = {factor}; change padding, "
                             "num_preprocess_blocks or num_latent_scales")

    @property
    def downsampling(self) -> int:
        """Side of the padded image divided by the side of the coarsest latent scale."""
        return 2 ** (self.num_preprocess_blocks + self.num_latent_scales - 1)

    @property
    def groups(self) -> list[int]:
        """Groups per latent scale, finest scale first."""
        out, n = [], self.groups_per_scale
        for _ in range(self.num_latent_scales):
            out.append(n)
            if self.adaptive_groups:
                n = max(self.min_groups_per_scale, n // 2)
        return out


# --- outputs -----------------------------------------------------------------------------------------------------


@dataclass
class LatentGroup:
    """One latent group of a forward pass (decoder order: coarsest scale first).

    Attributes:
        z: the sample fed to the decoder ``[B, C_z, h, w]`` (after the flow, if any).
        q: posterior Normal (before the flow); p: prior Normal.
        log_q_map: log q(z|x) per latent dimension ``[B, C_z, h, w]`` (flow log-det included); log_p_map:
            log p(z | z_<l) per dimension. Both are zero on the prior path.
        flow: True if a flow transformed the sample (its KL is then the sample estimate log q - log p).
        scale: index of the latent scale, 0 = coarsest.
    """

    z: torch.Tensor
    q: Normal
    p: Normal
    log_q_map: torch.Tensor
    log_p_map: torch.Tensor
    flow: bool
    scale: int

    @property
    def log_q(self) -> torch.Tensor:
        """log q(z|x) summed over the group, ``[B]``."""
        return self.log_q_map.flatten(1).sum(1)

    @property
    def log_p(self) -> torch.Tensor:
        """log p(z | z_<l) summed over the group, ``[B]``."""
        return self.log_p_map.flatten(1).sum(1)


@dataclass
class NVAEOutput:
    """A forward pass: ``params`` of the likelihood ``[B, K, H, W]`` (cropped to the image) and the groups."""

    params: torch.Tensor
    groups: list[LatentGroup] = field(default_factory=list)


@dataclass
class EncodedGroup:
    """The code of one group for an input: posterior mean and standard deviation and the z used ``[B, C_z, h, w]``."""

    mu: torch.Tensor
    sigma: torch.Tensor
    z: torch.Tensor
    scale: int


# --- the model -----------------------------------------------------------------------------------------------------


class NVAE(nn.Module):
    """The NVAE of :class:`NVAEConfig` (see the module docstring for the data flow).

    Args:
        config: the architecture; validated here.
    """

    def __init__(self, config: NVAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        self.groups_per_scale = c.groups  # finest scale first
        self.num_groups = sum(self.groups_per_scale)
        side = (c.image_size + 2 * c.padding) // c.downsampling
        self.top_shape = (c.latent_channels, side, side)

        self.stem = Conv2d(c.image_channels, c.enc_channels, 3, padding=1)
        self.pre_process, mult = self._init_pre_process()
        self.enc_tower, self.down_cells, mult = self._init_encoder_tower(mult)
        self.enc0 = nn.Sequential(nn.ELU(), Conv2d(c.enc_channels * mult, c.enc_channels * mult, 1), nn.ELU())
        (self.posterior_heads, self.prior_heads, self.enc_combiners,
         self.dec_combiners, self.flows) = self._init_samplers()
        # the decoder's constant input, at the coarsest scale (channels double at each halving)
        self.h = nn.Parameter(torch.rand(1, c.dec_channels * c.downsampling, side, side))
        self.dec_tower, self.up_cells, mult = self._init_decoder_tower()
        self.post_process, mult = self._init_post_process(mult)
        out = (c.image_channels if c.likelihood == "bernoulli"
               else logistic_mixture_channels(c.image_channels, c.num_mix))
        self.to_params = nn.Sequential(nn.ELU(), Conv2d(c.dec_channels * mult, out, 3, padding=1))
        self.set_checkpointing(c.checkpointing)
        # NHWC activations: oneDNN's convolutions (depthwise ones above all) run several times faster than in NCHW
        # on CPU, and cuDNN prefers it under mixed precision. Set to torch.contiguous_format for NCHW.
        self.memory_format = torch.channels_last

    # --- builders (the official code's init_* methods) ---------------------------------------------------------

    def _init_pre_process(self) -> tuple[nn.Sequential, int]:
        c, cells, mult = self.config, [], 1
        for _ in range(c.num_preprocess_blocks):
            for i in range(c.num_preprocess_cells):
                last = i == c.num_preprocess_cells - 1
                cells.append(Cell(c.enc_channels * mult, "down_pre" if last else "normal_pre", c.use_se))
                mult *= 2 if last else 1
        return nn.Sequential(*cells), mult

    def _init_encoder_tower(self, mult: int) -> tuple[nn.ModuleList, nn.ModuleList, int]:
        """One ``nn.Sequential`` of cells per group, per scale (finest first); a down cell between scales."""
        c = self.config
        tower, downs = nn.ModuleList(), nn.ModuleList()
        for s, groups in enumerate(self.groups_per_scale):
            width = c.enc_channels * mult
            tower.append(nn.ModuleList(
                nn.Sequential(*[Cell(width, "normal_enc", c.use_se) for _ in range(c.enc_cells_per_group)])
                for _ in range(groups)))
            if s < c.num_latent_scales - 1:
                downs.append(Cell(width, "down_enc", c.use_se))
                mult *= 2
        return tower, downs, mult

    def _init_samplers(self):
        """Per group, in decoder order (coarsest scale first): posterior head, prior head (not for group 0, whose
        prior is N(0, I)), encoder combiner (not for group 0), decoder combiner, flow."""
        c = self.config
        posterior, prior, enc_comb, dec_comb, flows = (nn.ModuleList() for _ in range(5))
        mult = c.downsampling  # channels double at each halving: the coarsest scale's multiplier
        for s in range(c.num_latent_scales):
            groups = self.groups_per_scale[c.num_latent_scales - 1 - s]
            ce, cd = c.enc_channels * mult, c.dec_channels * mult
            for g in range(groups):
                posterior.append(Conv2d(ce, 2 * c.latent_channels, 3, padding=1))
                if s or g:
                    prior.append(nn.Sequential(nn.ELU(), Conv2d(cd, 2 * c.latent_channels, 1)))
                    enc_comb.append(EncoderCombiner(ce, cd))
                dec_comb.append(DecoderCombiner(cd, c.latent_channels))
                flows.append(nn.ModuleList(PairedFlow(c.latent_channels) for _ in range(c.num_flows)))
            mult //= 2
        return posterior, prior, enc_comb, dec_comb, flows

    def _init_decoder_tower(self) -> tuple[nn.ModuleList, nn.ModuleList, int]:
        """Per scale (coarsest first), one ``nn.Sequential`` of cells per group (empty for group 0); up cells."""
        c = self.config
        mult = c.downsampling  # channels double at each halving: the coarsest scale's multiplier
        tower, ups = nn.ModuleList(), nn.ModuleList()
        for s in range(c.num_latent_scales):
            groups = self.groups_per_scale[c.num_latent_scales - 1 - s]
            width = c.dec_channels * mult
            tower.append(nn.ModuleList(
                nn.Sequential(*[Cell(width, "normal_dec", c.use_se) for _ in range(c.dec_cells_per_group
                                                                                    if s or g else 0)])
                for g in range(groups)))
            if s < c.num_latent_scales - 1:
                ups.append(Cell(width, "up_dec", c.use_se))
                mult //= 2
        return tower, ups, mult

    def _init_post_process(self, mult: int) -> tuple[nn.Sequential, int]:
        c, cells = self.config, []
        for _ in range(c.num_postprocess_blocks):
            for i in range(c.num_postprocess_cells):
                cells.append(Cell(c.dec_channels * mult, "up_post" if i == 0 else "normal_post", c.use_se))
                mult //= 2 if i == 0 else 1
        return nn.Sequential(*cells), mult

    # --- options -------------------------------------------------------------------------------------------------

    def set_checkpointing(self, enabled: bool) -> None:
        """Recompute every BN-Swish output in the backward pass (less memory, ≈ one more forward of those layers)."""
        for module in self.modules():
            if isinstance(module, BNSwish):
                module.checkpoint = bool(enabled)

    def generative_modules(self) -> list[nn.Module]:
        """The modules the prior path runs (:meth:`sample`): the top-down tower, its heads and the output."""
        return [self.dec_tower, self.up_cells, self.prior_heads, self.dec_combiners, self.post_process,
                self.to_params]

    # --- the two passes ------------------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor) -> None:
        c = self.config
        want = (c.image_channels, c.image_size, c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"NVAE expects images [B, {want[0]}, {want[1]}, {want[2]}] (NVAEConfig.image_channels, "
                             f"image_size), got {tuple(x.shape)}; the padded side image_size + 2 * padding must be "
                             f"divisible by 2 ** (num_preprocess_blocks + num_latent_scales - 1) = {c.downsampling}")

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass: one feature per group in decoder order (coarsest first; group 0's is ``enc0``'s).

        Args:
            x: images ``[B, C, H, W]`` in [0, 1].
        """
        self._check_input(x)
        p = self.config.padding
        s = self.stem(2 * F.pad(x, (p, p, p, p)) - 1).contiguous(memory_format=self.memory_format)
        s = self.pre_process(s)
        features = []
        for scale, blocks in enumerate(self.enc_tower):
            for block in blocks:
                s = block(s)
                features.append(s)
            if scale < len(self.down_cells):
                s = self.down_cells[scale](s)
        features[-1] = self.enc0(features[-1])  # the last (coarsest) group's feature gives the top posterior
        return features[::-1]

    def _top_down(self, features: list[torch.Tensor] | None, batch: int, temperature: float = 1.0,
                  mode: str = "sample", generator: torch.Generator | None = None) -> NVAEOutput:
        """Shared top-down tower. ``features`` given: posterior path (sample z ~ q, or its mean for
        ``mode="mean"``); None: prior path at ``temperature``."""
        s = self.h.expand(batch, -1, -1, -1).contiguous(memory_format=self.memory_format)
        groups: list[LatentGroup] = []
        l = 0
        for scale, blocks in enumerate(self.dec_tower):
            for block in blocks:
                s = block(s)
                if l == 0:
                    zeros = torch.zeros((batch, *self.top_shape), device=s.device)
                    p = Normal(zeros, torch.full_like(zeros, temperature if features is None else 1.0))
                else:
                    mu_p, log_sigma_p = self.prior_heads[l - 1](s).chunk(2, dim=1)
                    p = Normal.from_raw(mu_p, log_sigma_p, temperature if features is None else 1.0)
                if features is None:
                    z = p.sample(generator)
                    zeros = torch.zeros_like(z)
                    groups.append(LatentGroup(z, p, p, zeros, zeros, False, scale))
                else:
                    f = features[0] if l == 0 else self.enc_combiners[l - 1](features[l], s)
                    d_mu, d_log_sigma = self.posterior_heads[l](f).chunk(2, dim=1)
                    # residual Normal: the posterior head shifts the prior's raw parameters (top group: N(0, I))
                    q = (Normal.from_raw(d_mu, d_log_sigma) if l == 0 else
                         Normal.from_raw(mu_p + d_mu, log_sigma_p + d_log_sigma))
                    z = q.mu if mode == "mean" else q.sample(generator)
                    log_q = q.log_prob(z)
                    for flow in self.flows[l]:
                        z, log_det = flow(z)
                        log_q = log_q - log_det
                    groups.append(LatentGroup(z, q, p, log_q, p.log_prob(z), len(self.flows[l]) > 0, scale))
                s = self.dec_combiners[l](s, z.to(s.dtype).contiguous(memory_format=self.memory_format))
                l += 1
            if scale < len(self.up_cells):
                s = self.up_cells[scale](s)
        s = self.post_process(s)
        params = self.to_params(s)
        p = self.config.padding
        if p:
            params = params[:, :, p:-p, p:-p]
        return NVAEOutput(params, groups)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> NVAEOutput:
        """Encode ``x`` ``[B, C, H, W]`` (pixels in [0, 1]), sample z ~ q(z|x) group by group, decode.

        Returns:
            :class:`NVAEOutput` with the likelihood parameters and, per group, z, q, p, log q and log p.
        """
        features = self.encoder_features(x)
        return self._top_down(features, x.shape[0], generator=generator)

    def likelihood(self, params: torch.Tensor) -> Bernoulli | DiscretizedLogisticMixture:
        """The pixel distribution p(x|z) for decoder outputs ``params``."""
        c = self.config
        if c.likelihood == "bernoulli":
            return Bernoulli(params)
        return DiscretizedLogisticMixture(params, c.image_channels, c.num_mix, c.num_bits)

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder outputs for ``num_samples`` draws from the prior with every σ scaled by ``temperature``.

        ``z_1 ~ N(0, t² I)`` and ``z_l ~ N(μ_p, (t σ_p)²)``; at ``temperature = 0`` every group takes its prior mean,
        so the output is deterministic. Pass the result to :meth:`likelihood` for images (``.mean`` / ``.sample``).

        Returns:
            ``[num_samples, K, H, W]`` likelihood parameters.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        return self._top_down(None, num_samples, temperature, generator=generator).params

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> NVAEOutput:
        """Encode ``x`` ``[B, C, H, W]`` and decode with every group at its posterior mean (deterministic).

        Returns:
            :class:`NVAEOutput`; ``likelihood(out.params)`` is the distribution of the reconstructions.
        """
        return self._top_down(self.encoder_features(x), x.shape[0], mode="mean")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample: bool = False,
               generator: torch.Generator | None = None) -> list[EncodedGroup]:
        """The latent code of ``x`` per group (decoder order), for downstream use (clustering, interpolation).

        Each group's posterior depends on the groups above it; with ``sample=False`` they are conditioned on the
        posterior means (deterministic), with ``sample=True`` on posterior samples.
        """
        out = self._top_down(self.encoder_features(x), x.shape[0], mode="sample" if sample else "mean",
                             generator=generator)
        return [EncodedGroup(g.q.mu, g.q.sigma, g.z, g.scale) for g in out.groups]

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log p(x|z), log p(z), log q(z|x))``, each ``[k, B]`` nats, for k fresh posterior samples per image.

        The bottom-up pass runs once per image; only the top-down pass and the decoder run for each sample. This is
        the ``log_weights`` callable of :func:`kexue.eval.likelihood.importance_weighted_nll`.
        """
        b = x.shape[0]
        features = [f.repeat_interleave(k, dim=0).contiguous(memory_format=self.memory_format)  # [B·k, ...]
                    for f in self.encoder_features(x)]  # image-major: the k samples of image b are rows b·k ...
        out = self._top_down(features, b * k)
        log_px = self.likelihood(out.params).log_prob(x.repeat_interleave(k, dim=0)).flatten(1).sum(1)
        log_pz = torch.stack([g.log_p for g in out.groups]).sum(0)
        log_qz = torch.stack([g.log_q for g in out.groups]).sum(0)
        return tuple(t.view(b, k).t() for t in (log_px, log_pz, log_qz))

    @torch.no_grad()
    def readjust_bn(self, temperature: float, num_batches: int = 500, batch_size: int = 16,
                    generator: torch.Generator | None = None, cumulative: bool = True) -> None:
        """Re-estimate the BatchNorm statistics of the prior path at ``temperature`` (NVAE's ``--readjust_bn``).

        The running statistics of the generative modules are re-estimated from ``num_batches`` prior samples of
        ``batch_size`` in training mode: with ``cumulative`` they are reset and averaged with equal weights
        (converges in fewer batches), else updated with the layers' own momentum as the official code does. The
        model is left in eval mode; the encoder's statistics are untouched. Re-estimated statistics are tuned to
        sampling at that temperature: evaluate likelihoods with the training statistics (work on a copy).
        """
        if num_batches < 1 or batch_size < 1:
            raise ValueError(f"num_batches and batch_size must be >= 1, got {num_batches} and {batch_size}")
        bns = [m for mod in self.generative_modules() for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in bns]
        if cumulative:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
        self.train()
        for _ in range(num_batches):
            self._top_down(None, batch_size, temperature, generator=generator)
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        self.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def latent_dims(config: NVAEConfig) -> int:
    """Total latent dimensions: Σ over groups of C_z · h · w."""
    side = (config.image_size + 2 * config.padding) // config.downsampling
    total = 0
    for s, groups in enumerate(reversed(config.groups)):  # coarsest first
        total += groups * config.latent_channels * (side * 2**s) ** 2
    return total


