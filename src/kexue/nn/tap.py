"""Tap points: name a tensor inside ``forward`` so that a capture (``kexue.train.capture``) can record it.

Models call ``x = tap("blocks.0.attn.weights", x)`` on tensors that no module returns (an attention matrix, a
gate). With no capture active a tap is one attribute read and returns its input untouched, so models pay nothing.
This module is deliberately dependency-free: low layers (nn, models) may call ``tap``; only ``train.capture``
installs listeners.
"""

from collections.abc import Callable

import torch

# Set by an active capture; called as listener(name, tensor). None when nothing is capturing.
_listener: Callable[[str, torch.Tensor], None] | None = None


def tap(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Offer ``tensor`` under ``name`` to the active capture, if any; returns ``tensor`` unchanged."""
    if _listener is not None:
        _listener(name, tensor)
    return tensor


def active() -> bool:
    """True while a capture listens, so a layer can skip work (an explicit attention matrix) nobody would record."""
    return _listener is not None


def set_listener(listener: Callable[[str, torch.Tensor], None] | None) -> Callable | None:
    """Install ``listener`` (or remove it with None); returns the previous one so captures can nest."""
    global _listener
    previous, _listener = _listener, listener
    return previous
