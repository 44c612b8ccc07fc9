"""Capture: recorded values equal a manual recomputation, outputs are unchanged, nothing is left behind."""

import math

import pytest
import torch
from torch import nn

from kexue.errors import KexueError
from kexue.nn import tap as tap_module
from kexue.nn.tap import tap
from kexue.train.capture import capture


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = tap("attn.weights", torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1))
        return weights @ v


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = Attention(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self, dim: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_capture_equals_manual_recomputation_and_leaves_output_unchanged():
    model = Net()
    x = torch.randn(2, 5, 8)
    plain = model(x)
    with capture(model, "blocks.*.attn", taps=["attn.weights"]) as cap:
        y = model(x)
    assert torch.equal(y, plain)
    # manual recomputation, block by block
    h = x
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv(h).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
        torch.testing.assert_close(cap.all("attn.weights")[i], weights, rtol=0, atol=0)
        torch.testing.assert_close(cap[f"blocks.{i}.attn"], weights @ v, rtol=0, atol=0)
        torch.testing.assert_close(cap.all("attn.weights")[i].sum(-1), torch.ones(2, 5))
        h = block(h)
    assert not cap["blocks.0.attn"].requires_grad
    assert sorted(cap.keys()) == ["attn.weights", "blocks.0.attn", "blocks.1.attn"]


def test_no_hook_or_listener_is_left_behind_even_on_exceptions():
    model = Net()
    with capture(model, "blocks.**", taps=["**"]) as cap:
        assert not no_hooks(model) and tap_module._listener is not None
        model(torch.randn(1, 3, 8))
    assert "blocks.1.mlp.0" in cap and len(cap.all("attn.weights")) == 2
    assert no_hooks(model) and tap_module._listener is None
    with pytest.raises(ValueError, match="inside"), capture(model, "blocks.0.mlp.*", taps=["attn.weights"]):
        model(torch.randn(1, 3, 8))
        raise ValueError("inside")
    assert no_hooks(model) and tap_module._listener is None


def test_tap_without_capture_returns_its_input_object():
    t = torch.randn(3)
    assert tap("anything", t) is t
    assert tap_module._listener is None


def test_clone_protects_against_in_place_ops():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(inplace=True))
    x = torch.randn(8, 4)
    with torch.no_grad():
        expected = model[0](x)
        with capture(model, "0") as safe:
            model(x)
        with capture(model, "0", clone=False) as unsafe:
            model(x)
    assert torch.equal(safe["0"], expected) and (safe["0"] < 0).any()
    assert torch.equal(unsafe["0"], expected.clamp_min(0))  # the pitfall: the in-place ReLU overwrote the record


def test_detach_false_keeps_the_graph():
    model = Net(depth=1)
    x = torch.randn(1, 3, 8)
    with capture(model, "blocks.0.attn", detach=False) as cap:
        model(x)
    record = cap["blocks.0.attn"]
    assert record.requires_grad
    record.sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


def test_pattern_errors_and_repeated_calls():
    model = Net()
    with pytest.raises(KexueError, match="matches no module"), capture(model, "blocks.*.attention"):
        pass
    assert no_hooks(model)
    with pytest.raises(KexueError, match="saw no tap"), capture(model, taps=["mlp.gate"]):
        model(torch.randn(1, 2, 8))
    assert tap_module._listener is None
    with capture(model, "blocks.0") as cap:
        model(torch.randn(1, 2, 8))
        model(torch.randn(1, 2, 8))
    assert len(cap.all("blocks.0")) == 2
    with pytest.raises(KexueError, match="recorded 2 times"):
        cap["blocks.0"]


def test_nested_captures_both_see_taps_and_wrapped_names_work():
    model = Net(depth=1)
    compiled = torch.compile(model)  # never run: only its _orig_mod. names matter here
    with capture(compiled, "blocks.0.attn", taps=["attn.*"]) as outer:
        with capture(None, taps=["attn.weights"]) as inner:
            model(torch.randn(1, 2, 8))
        assert tap_module._listener is not None  # the outer one is back
    assert tap_module._listener is None
    assert torch.equal(outer["attn.weights"], inner["attn.weights"])
    assert "blocks.0.attn" in outer
