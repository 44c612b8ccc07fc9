"""Post-hoc EMA: choose the averaging length after training (Karras et al., EDM2, arXiv 2312.02696, section 3).

Train once while tracking a few **power-function EMAs** and saving their snapshots; afterwards, the EMA of any
other relative width is a linear combination of the snapshots, found by least squares over averaging profiles.

The power-function EMA with exponent :math:`\\gamma` updates at step :math:`t = 1, 2, \\dots`

.. math:: \\hat\\theta_t = \\beta_t \\hat\\theta_{t-1} + (1 - \\beta_t)\\,\\theta_t,
          \\qquad \\beta_t = (1 - 1/t)^{\\gamma + 1}.

Unrolled, :math:`\\prod_{s=\\tau+1}^{t}\\beta_s = (\\tau/t)^{\\gamma+1}`, so step :math:`\\tau` gets the weight

.. math:: w_{t,\\gamma}(\\tau) = \\frac{\\tau^{\\gamma+1} - (\\tau-1)^{\\gamma+1}}{t^{\\gamma+1}}
          = \\int_{\\tau-1}^{\\tau} p_{t,\\gamma}(u)\\,du, \\qquad
          p_{t,\\gamma}(u) = \\frac{(\\gamma+1)\\,u^{\\gamma}}{t^{\\gamma+1}} \\text{ on } [0, t]

(:func:`power_weights`): the discrete EMA is *exactly* the continuous profile :math:`p_{t,\\gamma}` applied to the
piecewise-constant trajectory :math:`u \\mapsto \\theta_{\\lceil u \\rceil}`. Hence least squares between continuous
profiles (closed-form inner products, :func:`profile_inner`) is the right criterion for the discrete EMAs too, with
no discretisation error. The profile's standard deviation relative to :math:`t` is
:math:`\\sigma_{rel} = \\sqrt{(\\gamma+1) / ((\\gamma+2)^2(\\gamma+3))}` (:func:`gamma_to_sigma_rel`); it peaks at
0.3003 (:math:`\\gamma = (\\sqrt5 - 3)/2`), and the inverse keeps the largest root of the cubic
:math:`\\sigma_{rel}^2(\\gamma+2)^2(\\gamma+3) - (\\gamma+1) = 0` (:func:`sigma_rel_to_gamma`).

Reconstruction (:func:`solve_coefficients`): given snapshots :math:`(t_i, \\gamma_i)` and a target
:math:`(t^*, \\gamma^*)`, minimise :math:`\\|\\sum_i x_i p_{t_i,\\gamma_i} - p_{t^*,\\gamma^*}\\|_{L^2}` subject to
:math:`\\sum_i x_i = 1` (an average must keep constants; EDM2 instead rescales the unconstrained solution). Only
snapshots with :math:`t_i \\le t^*` are used: the target cannot see later weights. A target equal to a snapshot's
profile is reproduced exactly. :func:`solve_coefficients_reference` is the slow twin (a dense quadrature grid and a
generic least-squares solver).

:class:`PowerEMA` is one tracked profile (an :class:`~kexue.train.ema.EMA` with the schedule above, so swap-in,
copies, the buffer policy and the fp32 shadow come with it); :class:`PostHocEMA` tracks several and takes the
snapshots, in memory or as files written by rank 0 only; :func:`reconstruct` combines snapshots into weights.
"""

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from kexue.errors import KexueError
from kexue.train.checkpoint import load_tensors, save_tensors
from kexue.train.distributed import DistInfo, current
from kexue.train.ema import EMA, assign_weights, unwrap

GAMMA_AT_MAX_WIDTH = (math.sqrt(5.0) - 3.0) / 2.0  # where d sigma_rel / d gamma = 0: gamma^2 + 3 gamma + 1 = 0
SIGMA_REL_MAX = math.sqrt((GAMMA_AT_MAX_WIDTH + 1) / ((GAMMA_AT_MAX_WIDTH + 2) ** 2 * (GAMMA_AT_MAX_WIDTH + 3)))


# --- profiles ---------------------------------------------------------------------------------------------------------


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative width of the power-function profile: :math:`\\sqrt{(\\gamma+1)/((\\gamma+2)^2(\\gamma+3))}`."""
    if not (isinstance(gamma, int | float) and gamma > -1 and math.isfinite(gamma)):
        raise KexueError(f"power EMA: gamma must be a finite number > -1, got {gamma!r}")
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent :math:`\\gamma` whose profile has relative width ``sigma_rel`` (the largest real root).

    The cubic :math:`\\gamma^3 + 7\\gamma^2 + (16 - s^{-2})\\gamma + 12 - s^{-2} = 0` (:math:`s` = ``sigma_rel``)
    has a second root in :math:`(-1, \\gamma_{max})` with the same width, a profile piled up at the start of
    training; the largest root is the one that averages recent weights (0.05 -> 16.97, 0.10 -> 6.94).
    """
    if not (isinstance(sigma_rel, int | float) and 0 < sigma_rel < SIGMA_REL_MAX):
        raise KexueError(f"power EMA: sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}) (the widest power-function "
                         f"profile), got {sigma_rel!r}")
    c = 1.0 / sigma_rel**2
    roots = np.roots([1.0, 7.0, 16.0 - c, 12.0 - c])
    gamma = float(max(r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real))))
    for _ in range(2):  # Newton polish: np.roots goes through an eigenvalue problem
        f = ((gamma + 7.0) * gamma + 16.0 - c) * gamma + 12.0 - c
        gamma -= f / ((3.0 * gamma + 14.0) * gamma + 16.0 - c)
    return gamma


def power_beta(t: int, gamma: float) -> float:
    """The decay of the power-function EMA at step ``t >= 1``: :math:`(1 - 1/t)^{\\gamma+1}` (0 at ``t = 1``)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def power_weights(t: int, gamma: float) -> np.ndarray:
    """Closed-form weight of each step :math:`\\tau = 1..t` in the power-function EMA at step ``t``.

    Returns:
        float64 array ``[t]``: :math:`w(\\tau) = (\\tau/t)^{\\gamma+1} - ((\\tau-1)/t)^{\\gamma+1}`; sums to 1.
    """
    u = np.arange(t + 1, dtype=np.float64) / t
    return np.diff(u ** (gamma + 1.0))


def profile_inner(t_a, gamma_a, t_b, gamma_b) -> np.ndarray:
    """Closed-form :math:`\\langle p_{t_a,\\gamma_a}, p_{t_b,\\gamma_b}\\rangle = \\int_0^\\infty p_a p_b\\,du`.

    :math:`(\\gamma_a+1)(\\gamma_b+1) m^{\\gamma_a+\\gamma_b+1} / ((\\gamma_a+\\gamma_b+1) t_a^{\\gamma_a+1}
    t_b^{\\gamma_b+1})` with :math:`m = \\min(t_a, t_b)`, written with the ratio of the two times so that large
    :math:`t` and :math:`\\gamma` do not overflow. Broadcasts over array arguments (float64).
    """
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    lo, hi = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    g_hi = np.where(t_a >= t_b, g_a, g_b)  # exponent of the longer profile: only its part on [0, lo] overlaps
    return (g_a + 1) * (g_b + 1) / ((g_a + g_b + 1) * hi) * (lo / hi) ** g_hi


def profile_inner_reference(t_a: float, gamma_a: float, t_b: float, gamma_b: float, nodes: int = 64) -> float:
    """Slow twin of :func:`profile_inner`: Gauss-Legendre quadrature of :math:`p_a p_b` on :math:`[0, \\min]`.

    Exact up to round-off when :math:`\\gamma_a + \\gamma_b` is a small non-negative integer; accurate for smooth
    integrands otherwise.
    """
    m = min(t_a, t_b)
    x, w = np.polynomial.legendre.leggauss(nodes)
    u = (x + 1) * m / 2
    p_a = (gamma_a + 1) * u**gamma_a / t_a ** (gamma_a + 1)
    p_b = (gamma_b + 1) * u**gamma_b / t_b ** (gamma_b + 1)
    return float(np.sum(w * p_a * p_b) * m / 2)


# --- reconstruction coefficients ----------------------------------------------------------------------------------


def _check_target(snap_t: np.ndarray, snap_gamma: np.ndarray, t: float, gamma: float) -> np.ndarray:
    """Indices of the snapshots usable for target step ``t`` (``t_i <= t``), validated."""
    if snap_t.ndim != 1 or snap_t.shape != snap_gamma.shape or len(snap_t) == 0:
        raise KexueError(f"post-hoc EMA: need matching 1-D lists of snapshot steps and gammas, got shapes "
                         f"{snap_t.shape} and {snap_gamma.shape}")
    if not (np.all(snap_t >= 1) and np.all(snap_gamma > GAMMA_AT_MAX_WIDTH - 1e-12)):
        raise KexueError("post-hoc EMA: snapshot steps must be >= 1 and gammas >= (sqrt(5) - 3) / 2")
    if not (t >= 1 and gamma > GAMMA_AT_MAX_WIDTH - 1e-12):
        raise KexueError(f"post-hoc EMA: target step must be >= 1 and gamma >= (sqrt(5) - 3) / 2, got ({t}, {gamma})")
    usable = np.flatnonzero(snap_t <= t)
    if len(usable) == 0:
        raise KexueError(f"post-hoc EMA: no snapshot at or before step {t} (first snapshot: step "
                         f"{int(snap_t.min())})")
    return usable


def solve_coefficients(snap_t: Sequence[float], snap_gamma: Sequence[float], t: float, gamma: float) -> np.ndarray:
    """Weights :math:`x` of the snapshots whose combination best matches the profile :math:`(t, \\gamma)`.

    Solves :math:`\\min_x \\|\\sum_i x_i p_i - p^*\\|^2` subject to :math:`\\sum_i x_i = 1` through its KKT system
    :math:`[A, 1; 1^T, 0][x; \\lambda] = [b; 1]` with :math:`A_{ij} = \\langle p_i, p_j\\rangle`,
    :math:`b_i = \\langle p_i, p^*\\rangle`, Jacobi-scaled (the Gram matrix of nearby profiles is badly
    conditioned). Snapshots after ``t`` get weight 0; repeated ``(t_i, gamma_i)`` pairs share one weight.

    Args:
        snap_t, snap_gamma: ``[n]`` steps and exponents of the snapshots.
        t, gamma: the target profile.

    Returns:
        float64 ``[n]``, summing to 1.
    """
    snap_t, snap_gamma = np.asarray(snap_t, dtype=np.float64), np.asarray(snap_gamma, dtype=np.float64)
    usable = _check_target(snap_t, snap_gamma, t, gamma)
    pairs = np.stack([snap_t[usable], snap_gamma[usable]], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    ut, ug = unique[:, 0], unique[:, 1]
    a = profile_inner(ut[:, None], ug[:, None], ut[None, :], ug[None, :])
    b = profile_inner(ut, ug, t, gamma)
    d = 1.0 / np.sqrt(np.diag(a))
    n = len(ut)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = a * d[:, None] * d[None, :]
    kkt[:n, n] = kkt[n, :n] = d
    rhs = np.append(b * d, 1.0)
    y = np.linalg.solve(kkt, rhs)[:n] * d
    x = np.zeros(len(snap_t))
    counts = np.bincount(inverse.ravel(), minlength=n)
    x[usable] = y[inverse.ravel()] / counts[inverse.ravel()]
    return x


def solve_coefficients_reference(snap_t: Sequence[int], snap_gamma: Sequence[float], t: int, gamma: float,
                                 per_step: int = 8) -> np.ndarray:
    """Slow twin of :func:`solve_coefficients`: the same constrained least squares on a dense grid.

    Profiles are sampled at ``per_step`` midpoints of every unit step of :math:`[0, t]` (integer snapshot steps
    fall on cell edges, so each cell sees a smooth integrand), and the constrained problem is solved by
    eliminating the constraint (:math:`x = x_0 + N z`) and calling ``np.linalg.lstsq``.
    """
    snap_t, snap_gamma = np.asarray(snap_t, dtype=np.float64), np.asarray(snap_gamma, dtype=np.float64)
    usable = _check_target(snap_t, snap_gamma, t, gamma)
    h = 1.0 / per_step
    u = (np.arange(t * per_step) + 0.5) * h
    columns = np.stack([np.where(u <= ti, (gi + 1) * u**gi / ti ** (gi + 1), 0.0)
                        for ti, gi in zip(snap_t[usable], snap_gamma[usable], strict=True)], axis=1)
    target = (gamma + 1) * u**gamma / t ** (gamma + 1)
    sw = math.sqrt(h)  # midpoint-rule weights
    n = columns.shape[1]
    x0 = np.full(n, 1.0 / n)
    null = np.eye(n)[:, :-1] - np.eye(n)[:, -1:]  # columns sum to 0: x0 + null @ z always sums to 1
    z = np.linalg.lstsq(sw * columns @ null, sw * (target - columns @ x0), rcond=None)[0]
    x = np.zeros(len(snap_t))
    x[usable] = x0 + null @ z
    return x


# --- tracking ---------------------------------------------------------------------------------------------------------


class PowerEMA(EMA):
    """One power-function EMA profile: :math:`\\beta_t = (1 - 1/t)^{\\gamma+1}` at the ``t``-th update.

    Build it at the start of training (step counting starts at its first :meth:`update`). Everything else is
    :class:`~kexue.train.ema.EMA`'s: name pairing through DDP/``torch.compile`` wrappers, ``swap_into``, ``copy``,
    the buffer policy and the fp32 shadow.

    Args:
        model: the model to follow.
        sigma_rel: relative width of the averaging profile (EDM2 tracks 0.05 and 0.10); or give ``gamma``.
        gamma: the exponent directly.
        buffers, dtype: as for :class:`~kexue.train.ema.EMA`.
    """

    def __init__(self, model: nn.Module, sigma_rel: float | None = None, *, gamma: float | None = None,
                 buffers: str | dict[str, str] = "average", dtype: torch.dtype | None = None) -> None:
        if (sigma_rel is None) == (gamma is None):
            raise KexueError("PowerEMA: give exactly one of sigma_rel and gamma")
        self.gamma = sigma_rel_to_gamma(sigma_rel) if gamma is None else float(gamma)
        self.sigma_rel = gamma_to_sigma_rel(self.gamma)
        if self.gamma < GAMMA_AT_MAX_WIDTH:
            raise KexueError(f"PowerEMA: gamma must be >= (sqrt(5) - 3) / 2 = {GAMMA_AT_MAX_WIDTH:.4f} (below, the "
                             f"same width has a larger gamma), got {gamma!r}")
        super().__init__(model, 0.0, buffers=buffers, dtype=dtype)

    def decay_at(self, n: int) -> float:
        """:math:`(1 - 1/n)^{\\gamma+1}` for the ``n``-th update."""
        return power_beta(n, self.gamma)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """:meth:`EMA.state_dict` plus ``gamma`` (checked on load)."""
        return {**super().state_dict(), "gamma": torch.tensor(self.gamma, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "gamma" in state and not math.isclose(float(state["gamma"]), self.gamma, rel_tol=1e-12):
            raise KexueError(f"PowerEMA state has gamma {float(state['gamma']):.6g}, this EMA {self.gamma:.6g}")
        super().load_state_dict(state)


@dataclass
class Snapshot:
    """One saved power-function EMA: its step, exponent, and weights (in memory, or a file read on demand)."""

    step: int
    gamma: float
    tensors: dict[str, torch.Tensor] | None = None
    path: Path | None = None
    not_averaged: frozenset[str] = field(default_factory=frozenset)  # copied/kept entries: taken, not combined

    def load(self) -> dict[str, torch.Tensor]:
        return self.tensors if self.tensors is not None else load_tensors(self.path)[0]


_FILE = re.compile(r"^phema-(\d{9})-(\d+)\.safetensors$")


def load_snapshots(directory: str | Path) -> list[Snapshot]:
    """The snapshots :class:`PostHocEMA` wrote into ``directory`` (weights stay on disk until used), by step."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KexueError(f"post-hoc EMA: snapshot directory {directory} does not exist")
    out = []
    for path in sorted(directory.iterdir()):
        if _FILE.match(path.name):
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            out.append(Snapshot(int(meta["step"]), float(meta["gamma"]), path=path,
                                not_averaged=frozenset(json.loads(meta["not_averaged"]))))
    if not out:
        raise KexueError(f"post-hoc EMA: no snapshot files (phema-*.safetensors) in {directory}")
    return sorted(out, key=lambda s: (s.step, s.gamma))


@torch.no_grad()
def reconstruct(snapshots: Sequence[Snapshot], sigma_rel: float, step: int | None = None) -> dict[str, torch.Tensor]:
    """The EMA of relative width ``sigma_rel`` at ``step`` (default: the last snapshot's), from snapshots.

    Averaged entries are :math:`\\sum_i x_i \\hat\\theta_i` with :func:`solve_coefficients`' weights, summed in
    float64 (the weights can be large and of both signs) and returned in the snapshots' dtype. Entries the
    snapshots copied or kept (integer and spectral-norm buffers, buffers under ``"copy"``) come from the latest
    snapshot at or before ``step``. Snapshots are loaded one at a time, so memory stays at about two models.

    Note:
        BatchNorm running variances under ``buffers="average"`` are combined like weights; with negative
        coefficients a combination can fall below 0. Copy them, or recompute them for the reconstructed weights.
    """
    if not snapshots:
        raise KexueError("post-hoc EMA: no snapshots to reconstruct from")
    step = max(s.step for s in snapshots) if step is None else step
    x = solve_coefficients([s.step for s in snapshots], [s.gamma for s in snapshots], step,
                           sigma_rel_to_gamma(sigma_rel))
    latest = max((s for s in snapshots if s.step <= step), key=lambda s: s.step)
    out: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for weight, snap in zip(x, snapshots, strict=True):
        if weight == 0.0 and snap is not latest:
            continue
        tensors = snap.load()
        for name, value in tensors.items():
            if name in snap.not_averaged or not value.is_floating_point():
                if snap is latest:
                    out[name] = value.clone()
                continue
            dtypes[name] = value.dtype
            term = value.to(torch.float64) * float(weight)
            out[name] = out[name].add_(term) if name in out else term
    return {name: value.to(dtypes[name]) if name in dtypes else value for name, value in out.items()}


class PostHocEMA:
    """Track several power-function EMAs and snapshot them every ``snapshot_every`` steps (EDM2's training side).

    Call :meth:`update` once per optimiser step, after ``optimizer.step()``. Every ``snapshot_every`` updates
    (and whenever :meth:`snapshot` is called, e.g. at the end of training) each profile's current averaged
    weights become a :class:`Snapshot`: kept in memory (CPU copies) or, with ``directory``, written atomically as
    ``phema-<step>-<profile>.safetensors`` by rank 0 only (other ranks keep nothing). :meth:`reconstruct` then gives
    the EMA of any ``sigma_rel`` at any snapshot step; after training, :func:`load_snapshots` and
    :func:`reconstruct` do the same from the files alone.

    Args:
        model: the model to follow (wrapped or not).
        sigma_rels: relative widths of the tracked profiles (EDM2: 0.05 and 0.10).
        snapshot_every: steps between snapshots.
        directory: where to write snapshots; None keeps them in memory.
        dist: this process's place under DDP (default: the current one); only rank 0 writes.
        buffers, dtype: as for :class:`~kexue.train.ema.EMA`.
    """

    def __init__(self, model: nn.Module, sigma_rels: Sequence[float] = (0.05, 0.10), *, snapshot_every: int,
                 directory: str | Path | None = None, dist: DistInfo | None = None,
                 buffers: str | dict[str, str] = "average", dtype: torch.dtype | None = None) -> None:
        if not (isinstance(snapshot_every, int) and snapshot_every >= 1):
            raise KexueError(f"PostHocEMA: snapshot_every must be a positive int, got {snapshot_every!r}")
        if len(sigma_rels) == 0:
            raise KexueError("PostHocEMA: sigma_rels must name at least one profile")
        self.profiles = [PowerEMA(model, s, buffers=buffers, dtype=dtype) for s in sigma_rels]
        self.snapshot_every = snapshot_every
        self.directory = Path(directory) if directory is not None else None
        self.dist = dist or current()
        self._template = unwrap(model)
        self._snapshots: list[Snapshot] = []  # in-memory ones
        self._not_averaged = frozenset(n for n, p in self.profiles[0].policy.items() if p != "average")

    @property
    def step(self) -> int:
        """Updates so far (the time axis of the profiles)."""
        return self.profiles[0].num_updates

    def update(self, model: nn.Module) -> None:
        """Update every profile; snapshot when the step is a multiple of ``snapshot_every``."""
        for profile in self.profiles:
            profile.update(model)
        if self.step % self.snapshot_every == 0:
            self.snapshot()

    def snapshot(self) -> None:
        """Save every profile's averaged weights at the current step (no-op before the first update, on ranks > 0,
        and for a step already saved)."""
        if self.step == 0 or not self.dist.is_main or any(s.step == self.step for s in self._snapshots):
            return
        for k, profile in enumerate(self.profiles):
            averaged = {n: v.to("cpu") for n, v in profile.averaged().items()}
            if self.directory is None:
                self._snapshots.append(Snapshot(self.step, profile.gamma, tensors=averaged,
                                                not_averaged=self._not_averaged))
                continue
            meta = {"step": str(self.step), "gamma": repr(profile.gamma), "sigma_rel": repr(profile.sigma_rel),
                    "not_averaged": json.dumps(sorted(self._not_averaged))}
            path = save_tensors(self.directory / f"phema-{self.step:09d}-{k}.safetensors", averaged, meta)
            self._snapshots.append(Snapshot(self.step, profile.gamma, path=path, not_averaged=self._not_averaged))

    def snapshots(self) -> list[Snapshot]:
        """Snapshots taken so far (by this object; :func:`load_snapshots` reads a directory)."""
        if not self.dist.is_main:
            raise KexueError("PostHocEMA: snapshots live on rank 0 only")
        return list(self._snapshots)

    def reconstruct(self, sigma_rel: float, step: int | None = None) -> dict[str, torch.Tensor]:
        """The averaged weights of relative width ``sigma_rel`` at ``step`` (default: the last snapshot)."""
        return reconstruct(self.snapshots(), sigma_rel, step)

    def copy(self, sigma_rel: float, step: int | None = None) -> nn.Module:
        """A separate module (deep copy of the model's structure) holding the reconstructed weights."""
        module = copy.deepcopy(self._template)
        assign_weights(module, self.reconstruct(sigma_rel, step))
        return module.requires_grad_(False)

    # --- state (for kexue.train.runtime.Runtime's ``ema`` slot) ----------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only: each profile's state (``profile.<k>.``) and the in-memory snapshots (``snap.<i>.``)."""
        state = {f"profile.{k}.{n}": v for k, p in enumerate(self.profiles) for n, v in p.state_dict().items()}
        if self.directory is None:
            for i, snap in enumerate(self._snapshots):
                state[f"snap.{i}.step"] = torch.tensor(snap.step, dtype=torch.int64)
                state[f"snap.{i}.gamma"] = torch.tensor(snap.gamma, dtype=torch.float64)
                state.update({f"snap.{i}.w.{n}": v for n, v in snap.tensors.items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`. With a ``directory``, snapshots on disk after the restored step are
        forgotten here and rewritten as training replays those steps."""
        for k, profile in enumerate(self.profiles):
            prefix = f"profile.{k}."
            profile.load_state_dict({n[len(prefix):]: v for n, v in state.items() if n.startswith(prefix)})
        if self.directory is None:
            count = len({n.split(".")[1] for n in state if n.startswith("snap.")})
            self._snapshots = []
            for i in range(count):
                prefix = f"snap.{i}.w."
                self._snapshots.append(Snapshot(
                    int(state[f"snap.{i}.step"]), float(state[f"snap.{i}.gamma"]),
                    tensors={n[len(prefix):]: v for n, v in state.items() if n.startswith(prefix)},
                    not_averaged=self._not_averaged))
        elif self.dist.is_main:
            files = self.directory.is_dir() and any(_FILE.match(p.name) for p in self.directory.iterdir())
            self._snapshots = [s for s in load_snapshots(self.directory) if s.step <= self.step] if files else []
