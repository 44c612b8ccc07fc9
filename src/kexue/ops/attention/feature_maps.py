"""Feature maps for kernelised (linear) attention: sim(q, k) = phi(q)^T varphi(k) >= 0.

Su, "Exploring linear attention: must attention have a softmax?" (kexue.fm/archives/7546); Katharopoulos et al.,
"Transformers are RNNs" (arXiv 2006.16236); Choromanski et al., "Rethinking attention with Performers"
(arXiv 2009.14794, FAVOR+); Shen et al., "Efficient Attention" (arXiv 1812.01243).

One small interface, after fast-transformers' ``feature_maps/base.py``: a map has ``forward_queries`` and
``forward_keys`` (queries and keys may be mapped differently), ``dim(d)`` (the feature size C for head size d), and
``redraw(generator)`` (draw new random features; a no-op for deterministic maps).

- ``elu``: elu(x) + 1, the paper's choice (positive, with non-zero gradient for x < 0).
- ``relu``: relu(x); a row of zeros gives a zero output (the eps guard keeps it finite).
- ``cos``: Su's first-order Taylor form, sim = 1 + cos(q, k) in [0, 2], via phi(x) = [1; x / |x|] (C = d + 1).
- ``favor``: FAVOR+ positive random features, phi(x) = exp(w^T x' - |x'|^2 / 2) / sqrt(m) with x' = x / d^(1/4), so
  that E[phi(q)^T phi(k)] = exp(q^T k / sqrt(d)), the softmax kernel. Orthogonal blocks of Gaussian rows.
- ``efficient``: Efficient Attention; queries get a softmax over features here, keys get a softmax over *positions*,
  which no per-token map can express, so :func:`kexue.ops.attention.linear_attention` sends it to
  :mod:`kexue.ops.attention.efficient`.

All maps work in the dtype they are given; the attention ops call them on float32 (or float64) copies.
"""

import math

import torch
import torch.nn.functional as F

# A 0-dim constant: ``x.add_(ONE)`` (or ``x.add_(ONE, alpha=eps)``) skips wrapping a Python number into a tensor,
# ~1 us of the ~3 us a tiny op costs, and decoding runs a dozen tiny ops per token and layer. A CPU 0-dim tensor
# works as a scalar for tensors of any float dtype and device.
ONE = torch.ones(())

# --------------------------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------------------------


class FeatureMap:
    """Base class: deterministic maps override :meth:`_phi`; maps that treat queries and keys differently override
    :meth:`forward_queries` / :meth:`forward_keys`."""

    name = "base"
    random = False  # True when the map holds random features that redraw() replaces

    def dim(self, d: int) -> int:
        """Feature size C produced for head size ``d``."""
        return d

    def forward_queries(self, q: torch.Tensor) -> torch.Tensor:
        """phi(q): ``[..., d]`` -> ``[..., C]``."""
        return self._phi(q)

    def forward_keys(self, k: torch.Tensor) -> torch.Tensor:
        """varphi(k): ``[..., d]`` -> ``[..., C]``."""
        return self._phi(k)

    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw new random features (no-op for deterministic maps)."""

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        # the hook of deterministic maps; maps with separate query and key features override those two instead
        raise NotImplementedError(f"{type(self).__name__} must override _phi, or forward_queries and forward_keys")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EluFeatureMap(FeatureMap):
    """phi(x) = elu(x) + 1 (Katharopoulos et al.)."""

    name = "elu"

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x).add_(ONE)  # in place: elu saves its input, not its output, for backward

    forward_queries = forward_keys = _phi  # one Python call less per decoding step


class ReluFeatureMap(FeatureMap):
    """phi(x) = relu(x)."""

    name = "relu"

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class CosFeatureMap(FeatureMap):
    """Su's Taylor form: phi(x) = [1; x / |x|], so phi(q)^T phi(k) = 1 + cos(q, k) in [0, 2].

    ``e^{q.k} ~ 1 + q.k`` is non-negative once q and k are L2-normalised (post 7546). Individual features may be
    negative; only their inner products are guaranteed >= 0.
    """

    name = "cos"

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps  # guards x / |x| at x = 0 (where the map returns [1; 0])

    def dim(self, d: int) -> int:
        return d + 1

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        unit = x / x.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return torch.cat([torch.ones_like(x[..., :1]), unit], dim=-1)


class FavorFeatureMap(FeatureMap):
    """FAVOR+ positive orthogonal random features for the softmax kernel exp(q^T k / sqrt(d)).

    phi(x) = exp(w_r^T x' - |x'|^2 / 2 - c) / sqrt(m), r = 1..m, x' = x / d^(1/4). For queries c is the row maximum,
    a per-query factor that cancels in the normalised output; for keys c = 0 (a shared key shift would have to look
    at future keys), with the exponent clamped at 60 as an overflow guard.

    Args:
        query_dims: head size d.
        n_features: m, the number of random features (default ``d * ceil(log d)``, at least d).
        generator: RNG for the features (call :meth:`redraw` with another to resample).
        device, dtype: where ``omega`` lives; it is moved to the input's device and dtype on use.
    """

    name = "favor"
    random = True

    def __init__(self, query_dims: int, n_features: int | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        if query_dims < 1:
            raise ValueError(f"query_dims must be >= 1, got {query_dims}")
        self.query_dims = query_dims
        self.n_features = n_features or max(query_dims, query_dims * math.ceil(math.log(max(query_dims, 2))))
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        self.omega = torch.empty(self.n_features, query_dims, device=device, dtype=dtype)
        self.redraw(generator)

    def dim(self, d: int) -> int:
        return self.n_features

    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Orthogonal Gaussian blocks: each block of d rows is orthonormal, rows rescaled by chi(d) norms."""
        d, m = self.query_dims, self.n_features
        device = self.omega.device
        g = torch.randn(math.ceil(m / d), d, d, generator=generator, device=device, dtype=torch.float64)
        qmat, r = torch.linalg.qr(g)  # batched: one orthonormal d x d block per d features
        # Sign fix: Householder QR returns a Q that is not Haar-distributed; Q diag(sign R) is (Mezzadri 2007).
        blocks = (qmat * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)).transpose(-1, -2)
        w = blocks.reshape(-1, d)[:m]
        norms = torch.randn(m, d, generator=generator, device=device, dtype=torch.float64).norm(dim=1)
        self.omega.copy_(w * norms[:, None])

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.query_dims:
            raise ValueError(f"favor feature map was built for head size {self.query_dims}, got {x.shape[-1]}")
        x = x * self.query_dims ** -0.25
        omega = self.omega.to(device=x.device, dtype=x.dtype)
        return x @ omega.T - 0.5 * (x * x).sum(-1, keepdim=True)  # [..., m]

    def forward_queries(self, q: torch.Tensor) -> torch.Tensor:
        u = self._project(q)
        # A per-query shift cancels between numerator and normaliser; it keeps exp() finite.
        return torch.exp(u - u.amax(-1, keepdim=True)) / math.sqrt(self.n_features)

    def forward_keys(self, k: torch.Tensor) -> torch.Tensor:
        u = self._project(k)
        # No data-dependent shift for keys: a shift shared by all keys would have to look at future tokens (it only
        # cancels up to eps), and a data-independent one (max |w|^2 / 2) makes every feature ~e^-d/2, far below eps.
        # w^T x' - |x'|^2 / 2 <= |w|^2 / 2, so exp() can only overflow for absurd inputs; the clamp at e^60 is a guard.
        return torch.exp(u.clamp_max(60.0)) / math.sqrt(self.n_features)

    def __repr__(self) -> str:
        return f"FavorFeatureMap(query_dims={self.query_dims}, n_features={self.n_features})"


class EfficientFeatureMap(FeatureMap):
    """Efficient Attention (Shen et al.): softmax over features for queries; keys are normalised over positions by
    the attention op itself (see :mod:`kexue.ops.attention.efficient`), so :meth:`forward_keys` is not per-token."""

    name = "efficient"

    def forward_queries(self, q: torch.Tensor) -> torch.Tensor:
        return torch.softmax(q, dim=-1)

    def forward_keys(self, k: torch.Tensor) -> torch.Tensor:
        raise TypeError("the efficient map normalises keys over positions; use linear_attention(feature_map=...)")


# --------------------------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------------------------

FEATURE_MAPS = ("elu", "relu", "cos", "favor", "efficient")


def get_feature_map(feature_map: "str | FeatureMap", query_dims: int | None = None, *,
                    generator: torch.Generator | None = None, n_features: int | None = None) -> FeatureMap:
    """A feature map by name (one of ``FEATURE_MAPS``), or ``feature_map`` itself if it already is one.

    Args:
        feature_map: name or instance.
        query_dims: head size d (needed by ``favor``).
        generator: RNG for random features (``favor``).
        n_features: number of random features (``favor``).
    """
    if isinstance(feature_map, FeatureMap):
        return feature_map
    if feature_map == "elu":
        return EluFeatureMap()
    if feature_map == "relu":
        return ReluFeatureMap()
    if feature_map == "cos":
        return CosFeatureMap()
    if feature_map == "efficient":
        return EfficientFeatureMap()
    if feature_map == "favor":
        if query_dims is None:
            raise ValueError("feature_map='favor' needs query_dims (the head size) to draw its random features")
        return FavorFeatureMap(query_dims, n_features, generator=generator)
    raise ValueError(f"unknown feature_map {feature_map!r}; expected one of {', '.join(FEATURE_MAPS)} or a "
                     "FeatureMap instance")
