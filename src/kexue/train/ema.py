"""Exponential moving average (EMA) of model weights, after Su's "Making Keras cooler!" (kexue.fm/archives/6575).

A shadow copy :math:`\\Theta` of every weight is blended with the live weights after each optimiser step,
:math:`\\Theta_{n+1} = \\alpha\\Theta_n + (1-\\alpha)\\theta_{n+1}`, and used for evaluation. The EMA never touches
the optimiser's trajectory; it only averages the points on it (post 6583 explains why that finds the centre of an
oscillation).

What is notable here (spec ``training-tools.md`` §7, §12):

- **Both ways of use.** ``ema.copy()`` returns a separate averaged module (like ``AveragedModel`` / timm), and
  ``with ema.swap_into(model):`` puts the averaged weights into the live model and restores the raw ones bit for bit
  afterwards (Su's ``apply_ema_weights`` / ``reset_old_weights``). The swap copies into the existing ``Parameter``
  objects, so optimisers that hold references to them keep working.
- **Pairing by name, loudly.** Entries are paired by their name with the wrapper prefixes ``module.`` (DDP) and
  ``_orig_mod.`` (``torch.compile``) stripped; a model whose names differ from the EMA's is an error, never a silent
  skip.
- **Keras zero-debias** (``bias_correction=True``): a hidden accumulator :math:`b_n` starts at 0 and the shadow is
  :math:`b_n / (1 - \\prod_i \\alpha_i)`, which is what ``K.moving_average_update`` computes in Keras 2.x.
- **fp32 shadow** even for bf16/fp16 models, where :math:`(1-\\alpha)(\\theta-\\Theta)` would round to zero.
- **Buffer policy per buffer**: ``"average"`` (like parameters; Keras averages BN statistics too), ``"copy"`` (the
  live value at the last update) or ``"keep"`` (never updated: constants, or values the averaged model owns), for
  all float buffers at once or by name pattern. Integer buffers (``num_batches_tracked``) are never averaged, and
  neither are spectral-norm power-iteration vectors ``u``/``v`` (both spectral-norm APIs are recognised): an average
  of unit vectors is not a unit vector, and the power iteration they carry would restart from a wrong guess.
- The update costs about what one ``lerp_`` over a flat buffer of the same bytes costs, whatever the number of
  tensors: on the CPU one compiled call averages every tensor of a dtype group (see ``_LerpPlan``); elsewhere one
  ``torch._foreach_lerp_`` per dtype group.
  :func:`ema_update_reference` is the plain per-tensor loop it is tested against.
"""

import copy
import fnmatch
import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from kexue.errors import KexueError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
BUFFER_POLICIES = ("average", "copy", "keep")


def canonical_name(name: str) -> str:
    """Strip leading wrapper prefixes: ``"_orig_mod.module.fc.weight"`` -> ``"fc.weight"``."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def _named_entries(model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """canonical name -> (kind, tensor) for every parameter and persistent-or-not buffer."""
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for kind, items in (("param", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in items:
            key = canonical_name(name)
            if key in out:
                raise KexueError(f"EMA: two entries of the model map to the name {key!r} after stripping wrapper "
                                 f"prefixes {WRAPPER_PREFIXES}; rename one of them")
            out[key] = (kind, tensor)
    return out


def power_iteration_buffers(model: nn.Module) -> set[str]:
    """Canonical names of spectral-norm ``u``/``v`` vectors in ``model`` (both PyTorch spectral-norm APIs).

    ``torch.nn.utils.parametrizations.spectral_norm`` keeps them as ``..._u``/``..._v`` buffers of its
    parametrization module; the older ``torch.nn.utils.spectral_norm`` hook keeps ``<name>_u``/``<name>_v`` on the
    wrapped module.
    """
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    out: set[str] = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, _SpectralNorm):
            out.update({f"{dot}_u", f"{dot}_v"})
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                out.update({f"{dot}{hook.name}_u", f"{dot}{hook.name}_v"})
    return {canonical_name(name) for name in out}


def buffer_policies(model: nn.Module, buffers: str | dict[str, str]) -> dict[str, str]:
    """canonical buffer name -> ``"average"``, ``"copy"`` or ``"keep"`` (see :class:`EMA`'s ``buffers``).

    Integer buffers asked to be averaged are copied. Spectral-norm vectors are copied under a blanket
    ``"average"``; a pattern that asks to average one explicitly is an error, as is a pattern matching no buffer.
    """
    if isinstance(buffers, str):
        if buffers not in BUFFER_POLICIES:
            raise KexueError(f"EMA: buffers must be one of {BUFFER_POLICIES} or a dict pattern -> policy, "
                             f"got {buffers!r}")
        patterns: dict[str, str] = {}
    elif isinstance(buffers, dict):
        patterns = buffers
        bad = {k: v for k, v in patterns.items() if not isinstance(k, str) or v not in BUFFER_POLICIES}
        if bad:
            raise KexueError(f"EMA: buffers must map name patterns to one of {BUFFER_POLICIES}, got {bad!r}")
    else:
        raise KexueError(f"EMA: buffers must be one of {BUFFER_POLICIES} or a dict pattern -> policy, "
                         f"got {buffers!r}")
    power_iteration = power_iteration_buffers(model)
    used: set[str] = set()
    out: dict[str, str] = {}
    for name, tensor in model.named_buffers():
        name = canonical_name(name)
        match = next((pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)), None)
        policy = patterns[match] if match is not None else (buffers if isinstance(buffers, str) else "average")
        if match is not None:
            used.add(match)
        if policy == "average" and name in power_iteration:
            if match is not None:
                raise KexueError(f"EMA: buffer {name!r} is a spectral-norm power-iteration vector; averaging it "
                                 f"breaks the power iteration (pattern {match!r}: use 'copy' or 'keep')")
            policy = "copy"
        if policy == "average" and not tensor.is_floating_point():
            policy = "copy"
        out[name] = policy
    unused = sorted(set(patterns) - used)
    if unused:
        raise KexueError(f"EMA: buffer patterns {unused} match no buffer of the model "
                         f"(buffers: {sorted(out)[:8]}{'...' if len(out) > 8 else ''})")
    return out


@torch.no_grad()
def assign_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` (canonical names, e.g. :meth:`EMA.averaged`) into ``model``'s parameters and buffers in place.

    Names are paired with wrapper prefixes stripped; every entry of the model must be given, with its shape.
    """
    entries = _named_entries(model)
    missing, extra = sorted(set(entries) - set(weights)), sorted(set(weights) - set(entries))
    if missing or extra:
        raise KexueError(f"EMA: weights do not match the model (missing: {missing[:5]}, unexpected: {extra[:5]})")
    for name, (_, live) in entries.items():
        if live.shape != weights[name].shape:
            raise KexueError(f"EMA: {name!r} has shape {tuple(live.shape)} in the model but "
                             f"{tuple(weights[name].shape)} in the weights")
        live.copy_(weights[name])


def decay_from_half_life(half_life: float) -> float:
    """Per-step decay whose weight on a point halves after ``half_life`` steps: :math:`0.5^{1/h}`."""
    if not (isinstance(half_life, int | float) and half_life > 0 and math.isfinite(half_life)):
        raise KexueError(f"EMA: half_life must be a positive number of steps, got {half_life!r}")
    return 0.5 ** (1.0 / half_life)


# --- the update kernel -----------------------------------------------------------------------------------------------


class _LerpPlan:
    """``shadow.lerp_(live, w)`` for the CPU tensors of one dtype group, as cheaply as the group allows.

    Contiguous float32/float64 pairs go through one compiled call (:class:`._lerp_kernel.LerpPieces`: no per-tensor
    dispatch, all threads, equal to ``torch._foreach_lerp_`` up to one rounding); the rest (non-contiguous views,
    other dtypes) through one ``torch._foreach_lerp_``.
    """

    def __init__(self, shadows: list[torch.Tensor], lives: list[torch.Tensor]) -> None:
        self.shadows, self.lives = shadows, lives
        self._build()

    def _build(self) -> None:
        from kexue.train._lerp_kernel import DTYPES, LerpPieces  # numba: imported only when a CPU EMA updates

        self.ptrs = [t.data_ptr() for t in self.lives]
        fast: tuple[list, list] = ([], [])
        self.rest: tuple[list, list] = ([], [])
        for shadow, live in zip(self.shadows, self.lives, strict=True):
            to = fast if shadow.dtype in DTYPES and shadow.is_contiguous() and live.is_contiguous() else self.rest
            to[0].append(shadow)
            to[1].append(live)
        self.kernel = LerpPieces(*fast) if fast[0] else None

    def __call__(self, weight: float) -> None:
        # A live tensor whose storage was replaced (``p.data = ...``, ``model.to(...)``) has new addresses, and maybe
        # a new layout: sort the pairs again.
        if [t.data_ptr() for t in self.lives] != self.ptrs:
            self._build()
        if self.rest[0]:
            torch._foreach_lerp_(self.rest[0], self.rest[1], weight)
        if self.kernel is not None:
            self.kernel(weight)


class EMA:
    """Shadow weights that follow a model with exponential decay.

    Call :meth:`update` once per **optimiser** step, after ``optimizer.step()`` (not per gradient-accumulation
    micro-batch). Build the EMA before or after wrapping the model in DDP or ``torch.compile``: names are paired
    with the wrapper prefixes stripped.

    The decay used at the :math:`n`-th update (``n = 1, 2, ...``):

    - ``n <= update_after_step``: 0, i.e. the shadow is a copy of the weights;
    - else, with ``t = n - update_after_step``: ``decay``, or with warm-up (``warmup_power`` set) timm's
      :math:`\\min(\\text{decay}, 1 - (1 + t/\\gamma)^{-p})`.

    Args:
        model: the model to follow (a wrapped model is fine). Its parameters and buffers are copied now.
        decay: :math:`\\alpha \\in [0, 1]`; 0 copies, 1 freezes. Mutually exclusive with ``half_life``.
        half_life: alternative to ``decay``, in optimiser steps: :math:`\\alpha = 0.5^{1/h}`.
        update_after_step: the first this-many updates copy the weights instead of averaging.
        warmup_power: if set, timm-style warm-up of the decay with this power (2/3 or 3/4 are common).
        warmup_gamma: the warm-up's time scale :math:`\\gamma` in steps.
        bias_correction: Keras/TF zero-debias: the shadow is :math:`b_n/(1-\\prod\\alpha_i)` with :math:`b_0 = 0`.
        buffers: what happens to buffers at each update: ``"average"`` (like parameters), ``"copy"`` (the live
            value) or ``"keep"`` (never updated: the value at construction or from :meth:`load_state_dict`); one
            policy for all, or a dict of ``fnmatch`` name patterns (wrapper prefixes stripped) -> policy, first
            match wins, unmatched buffers averaged, e.g. ``{"*.running_*": "copy"}``. Integer buffers are copied
            instead of averaged; spectral-norm ``u``/``v`` vectors likewise (asking for it by pattern is an error).
        dtype: shadow dtype for floating entries; default float32 (float64 entries stay float64), so that a bf16 or
            fp16 model's updates are not lost to rounding. A bf16 ``dtype`` is allowed but stalls: the step
            :math:`(1-\\alpha)(\\theta-\\Theta)` rounds away whenever it is below half an ulp of :math:`\\Theta`,
            i.e. for :math:`|\\theta-\\Theta| \\lesssim 2^{-9}|\\Theta|/(1-\\alpha)` (20 :math:`|\\Theta|` at
            0.9999): always, in practice.
    """

    def __init__(self, model: nn.Module, decay: float | None = None, *, half_life: float | None = None,
                 update_after_step: int = 0, warmup_power: float | None = None, warmup_gamma: float = 1.0,
                 bias_correction: bool = False, buffers: str | dict[str, str] = "average",
                 dtype: torch.dtype | None = None) -> None:
        if decay is not None and half_life is not None:
            raise KexueError("EMA: give either decay or half_life, not both")
        if decay is None:
            decay = 0.9999 if half_life is None else decay_from_half_life(half_life)
        if not (isinstance(decay, int | float) and 0.0 <= decay <= 1.0):
            raise KexueError(f"EMA: decay must be a number in [0, 1], got {decay!r}")
        if bias_correction and decay >= 1.0:
            raise KexueError("EMA: bias_correction needs decay < 1 (with decay 1 the debiased shadow is 0/0)")
        if not (isinstance(update_after_step, int) and update_after_step >= 0):
            raise KexueError(f"EMA: update_after_step must be a non-negative int, got {update_after_step!r}")
        if warmup_power is not None and not warmup_power > 0:
            raise KexueError(f"EMA: warmup_power must be positive, got {warmup_power!r}")
        if not warmup_gamma > 0:
            raise KexueError(f"EMA: warmup_gamma must be positive, got {warmup_gamma!r}")
        policies = buffer_policies(model, buffers)
        self.decay = float(decay)
        self.update_after_step = update_after_step
        self.warmup_power = warmup_power
        self.warmup_gamma = float(warmup_gamma)
        self.bias_correction = bias_correction
        self.buffers = buffers
        self.num_updates = 0  # update() calls so far
        self._decay_prod = 1.0  # product of the decays used since averaging (bias correction) started
        self._template = unwrap(model)  # for copy(); its weights are never read through this reference
        self.shadow: dict[str, torch.Tensor] = {}
        self.policy: dict[str, str] = {}  # name -> "average", "copy" or "keep"
        with torch.no_grad():
            for name, (kind, tensor) in _named_entries(model).items():
                floating = tensor.is_floating_point()
                sdtype = (dtype or (torch.float64 if tensor.dtype == torch.float64 else torch.float32)) \
                    if floating else tensor.dtype
                self.shadow[name] = tensor.detach().to(dtype=sdtype, copy=True)
                self.policy[name] = policies[name] if kind == "buffer" else ("average" if floating else "copy")
        self._average = {name for name, policy in self.policy.items() if policy == "average"}
        self._pairings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # --- decay schedule -------------------------------------------------------------------------------------

    def decay_at(self, n: int) -> float:
        """The decay used by the ``n``-th update (1-based)."""
        if n <= self.update_after_step:
            return 0.0
        if self.warmup_power is None:
            return self.decay
        t = n - self.update_after_step
        return min(self.decay, max(0.0, 1.0 - (1.0 + t / self.warmup_gamma) ** -self.warmup_power))

    @property
    def averaging(self) -> bool:
        """Whether averaging has started (bias correction counts from here)."""
        return self.num_updates > self.update_after_step

    # --- pairing ----------------------------------------------------------------------------------------------

    def _pair(self, model: nn.Module) -> dict:
        """Lists of (shadow, live) tensors grouped for ``_foreach`` calls, built once per model object.

        The pairing is cached (weakly) per model object: replacing a ``Parameter`` object of a model after its
        first update needs :meth:`forget`.
        """
        cached = self._pairings.get(model)
        if cached is not None:
            return cached
        entries = _named_entries(model)
        missing, extra = sorted(set(self.shadow) - set(entries)), sorted(set(entries) - set(self.shadow))
        if missing or extra:
            raise KexueError(f"EMA: the model's parameters/buffers do not match the EMA's names "
                             f"(missing from model: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                             f"unknown to EMA: {extra[:5]}{'...' if len(extra) > 5 else ''}); "
                             "build the EMA from this model")
        groups: dict[tuple, tuple[list, list]] = {}
        copies: tuple[list, list] = ([], [])
        for name, shadow in self.shadow.items():
            live = entries[name][1]
            if live.shape != shadow.shape:
                raise KexueError(f"EMA: {name!r} has shape {tuple(live.shape)} in the model but "
                                 f"{tuple(shadow.shape)} in the EMA")
            if name in self._average:
                key = (shadow.device, shadow.dtype, live.dtype)
                groups.setdefault(key, ([], []))
                groups[key][0].append(shadow)
                groups[key][1].append(live)
            elif self.policy[name] == "copy":
                copies[0].append(shadow)
                copies[1].append(live)
        average = [_LerpPlan(shadows, lives)
                   if shadows[0].device.type == "cpu" and shadows[0].dtype == lives[0].dtype else (shadows, lives)
                   for shadows, lives in groups.values()]
        pairing = {"average": average, "copy": copies,
                   "all": [(name, self.shadow[name], entries[name][1]) for name in self.shadow]}
        self._pairings[model] = pairing
        return pairing

    def forget(self) -> None:
        """Drop cached pairings (after replacing Parameter objects of a model the EMA was updated from)."""
        self._pairings = weakref.WeakKeyDictionary()

    # --- update -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current weights into the shadow; call after ``optimizer.step()``."""
        pairing = self._pair(model)
        self.num_updates += 1
        decay = self.decay_at(self.num_updates)
        start_debias = self.bias_correction and self.num_updates == self.update_after_step + 1
        for group in pairing["average"]:
            shadows, lives = (group.shadows, group.lives) if isinstance(group, _LerpPlan) else group
            if start_debias:
                torch._foreach_zero_(shadows)  # Keras: the hidden accumulator b starts at 0
            if isinstance(group, _LerpPlan):
                group(1.0 - decay)
                continue
            if shadows[0].dtype != lives[0].dtype:  # low-precision model, fp32 shadow: upcast first
                lives = [t.to(shadows[0].dtype) for t in lives]
            torch._foreach_lerp_(shadows, lives, 1.0 - decay)
        if pairing["copy"][0]:
            torch._foreach_copy_(pairing["copy"][0], pairing["copy"][1])
        if self.bias_correction and self.averaging:
            self._decay_prod *= decay

    def _debias(self) -> float | None:
        """The factor ``1/(1 - prod decay)`` to read the shadow out, or None if the shadow is already the value."""
        if not (self.bias_correction and self.averaging):
            return None
        return 1.0 / (1.0 - self._decay_prod)

    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged weights by name (fresh tensors, float entries in the shadow dtype)."""
        scale = self._debias()
        out = {}
        for name, shadow in self.shadow.items():
            out[name] = shadow * scale if (scale is not None and name in self._average) else shadow.clone()
        return out

    # --- using the averaged weights -------------------------------------------------------------------------

    @contextmanager
    def swap_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate with the averaged weights in place; the raw ones come back bit for bit on exit.

        Values are copied into the existing parameters and buffers (the ``Parameter`` objects are never replaced),
        so an optimiser holding them is unaffected. Exceptions inside the block still restore the raw weights.
        """
        pairing = self._pair(model)
        scale = self._debias()
        backup = []
        with torch.no_grad():
            for name, shadow, live in pairing["all"]:
                backup.append(live.detach().clone())
                value = shadow * scale if (scale is not None and name in self._average) else shadow
                live.copy_(value)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, _, live), saved in zip(pairing["all"], backup, strict=True):
                    live.copy_(saved)

    def copy(self, dtype: torch.dtype | None = None) -> nn.Module:
        """A separate module (deep copy of the model's structure) holding the averaged weights.

        Args:
            dtype: cast the copy's floating entries to this dtype; default: the model's own dtypes.
        """
        module = copy.deepcopy(self._template)
        if dtype is not None:
            module = module.to(dtype)
        self.copy_to(module)
        return module.requires_grad_(False)

    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (e.g. to keep only the EMA model at the end of training)."""
        assign_weights(model, self.averaged())

    # --- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly): ``shadow.<name>`` entries plus the update counters."""
        state = {f"shadow.{name}": t for name, t in self.shadow.items()}
        state["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        state["decay_prod"] = torch.tensor(self._decay_prod, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; names (wrapper prefixes stripped) and shapes must match exactly."""
        shadow = {canonical_name(k[len("shadow."):]): v for k, v in state.items() if k.startswith("shadow.")}
        missing, extra = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
        if missing or extra or "num_updates" not in state:
            raise KexueError(f"EMA state does not match this EMA (missing: {missing[:5]}, unexpected: {extra[:5]}"
                             f"{'' if 'num_updates' in state else ', no num_updates'})")
        with torch.no_grad():
            for name, value in shadow.items():
                if value.shape != self.shadow[name].shape:
                    raise KexueError(f"EMA state: {name!r} has shape {tuple(value.shape)}, expected "
                                     f"{tuple(self.shadow[name].shape)}")
                self.shadow[name].copy_(value)
        self.num_updates = int(state["num_updates"])
        self._decay_prod = float(state.get("decay_prod", torch.tensor(1.0)))


# --- slow twin ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update_reference(shadow: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """The obviously-correct per-tensor loop :meth:`EMA.update` must agree with (no warm-up, no debias).

    ``shadow[name] = decay * shadow[name] + (1 - decay) * weight`` for every float entry, copy for the rest.
    """
    for name, (_, tensor) in _named_entries(model).items():
        if tensor.is_floating_point():
            shadow[name].mul_(decay).add_(tensor.to(shadow[name].dtype), alpha=1.0 - decay)
        else:
            shadow[name].copy_(tensor)
