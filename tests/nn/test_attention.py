"""kexue.nn.attention: the layers' fast paths against their dense twins, decoding steps, taps."""

import pytest
import torch

from kexue.nn import tap
from kexue.nn.attention import LinearAttention, SoftmaxAttention


def _layer(kind, causal=True, fmap="elu"):
    torch.manual_seed(0)
    if kind == "softmax":
        return SoftmaxAttention(16, 4, causal=causal).double()
    return LinearAttention(16, 4, causal=causal, feature_map=fmap, chunk_size=4,
                           generator=torch.Generator().manual_seed(1)).double()


def _with_capture(layer, x, mask=None):
    seen = {}
    previous = tap.set_listener(lambda name, t: seen.__setitem__(name, t))
    try:
        y = layer(x, mask)
    finally:
        tap.set_listener(previous)
    return y, seen


@pytest.mark.parametrize("kind,fmap", [("softmax", "elu"), ("linear", "elu"), ("linear", "favor"),
                                       ("linear", "efficient")])
@pytest.mark.parametrize("causal", [True, False])
def test_fast_path_equals_tapped_dense_path(kind, fmap, causal):
    layer = _layer(kind, causal, fmap)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, -3:] = True
    fast = layer(x, mask)
    dense, seen = _with_capture(layer, x, mask)
    torch.testing.assert_close(fast, dense)
    w = seen["attn.weights"]
    assert w.shape == (2, 4, 9, 9)
    assert (w[1, :, :, -3:] == 0).all()  # padded keys get no weight
    if causal:
        assert (w.triu(1) == 0).all()
    # Rows sum to 1 up to the eps in the normaliser (FAVOR+ features are small, so eps shows at ~1e-5).
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]), atol=1e-4, rtol=0)


def test_softmax_layer_matches_manual_attention():
    layer = _layer("softmax")
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    q, k, v = layer.qkv(x).view(1, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    s = (q @ k.transpose(-1, -2)) / 2.0
    s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    y = torch.softmax(s, -1) @ v
    torch.testing.assert_close(layer(x), layer.out(y.transpose(1, 2).reshape(1, 5, 16)))


@pytest.mark.parametrize("kind,fmap", [("softmax", "elu"), ("linear", "elu"), ("linear", "cos"),
                                       ("linear", "favor"), ("linear", "efficient")])
def test_step_reproduces_forward(kind, fmap):
    layer = _layer(kind, True, fmap)
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    full = layer(x)
    cache = layer.init_cache(3, 11, dtype=torch.float64)
    steps = []
    for t in range(11):
        y, cache = layer.step(x[:, t], cache)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full)
    assert cache["length"] == 11


@pytest.mark.parametrize("kind,fmap", [("softmax", "elu"), ("linear", "elu"), ("linear", "favor"),
                                       ("linear", "efficient")])
def test_prefill_in_parts_then_step_reproduces_forward(kind, fmap):
    # Two prefills (the second continues from the first's cache) and then steps == one forward pass.
    layer = _layer(kind, True, fmap)
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    full = layer(x)
    cache = layer.init_cache(2, 13, dtype=torch.float64)
    y1, cache = layer.prefill(x[:, :5], cache)
    y2, cache = layer.prefill(x[:, 5:10], cache)
    steps = [layer.step(x[:, t], cache)[0] for t in range(10, 13)]
    torch.testing.assert_close(torch.cat([y1, y2, torch.stack(steps, 1)], 1), full)
    assert cache["length"] == 13


def test_favor_features_are_a_buffer_and_redraw():
    layer = _layer("linear", fmap="favor")
    assert "omega" in dict(layer.named_buffers())
    before = layer.omega.clone()
    layer.redraw_features(torch.Generator().manual_seed(7))
    assert not torch.equal(before, layer.omega)
    state = layer.state_dict()
    other = _layer("linear", fmap="favor")
    other.load_state_dict(state)
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(other(x), layer(x))


def test_layers_share_one_calling_convention():
    # Same forward / step / init_cache signatures, so a model can swap one for the other.
    import inspect

    for method in ("forward", "prefill", "step", "init_cache"):
        a = inspect.signature(getattr(SoftmaxAttention, method))
        b = inspect.signature(getattr(LinearAttention, method))
        assert list(a.parameters) == list(b.parameters), method
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    assert _layer("softmax")(x).shape == _layer("linear")(x).shape == x.shape


def test_linear_step_state_does_not_grow_and_kv_cache_does():
    lin, sm = _layer("linear"), _layer("softmax")
    lin_cache, sm_cache = lin.init_cache(1, 64, dtype=torch.float64), sm.init_cache(1, 64, dtype=torch.float64)
    sizes = set()
    for _ in range(20):
        lin.step(torch.randn(1, 16, dtype=torch.float64), lin_cache)
        sm.step(torch.randn(1, 16, dtype=torch.float64), sm_cache)
        sizes.add(lin_cache["state"].s.numel() + lin_cache["state"].z.numel())
    assert sizes == {4 * 4 * 4 + 4 * 4}  # heads x C x M + heads x C, at every position
    assert sm_cache["length"] == 20 and sm_cache["k"].shape[2] == 64


def test_bad_inputs():
    layer = _layer("linear")
    with pytest.raises(ValueError, match="x must be"):
        layer(torch.randn(2, 9, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        layer(torch.randn(2, 9, 16, dtype=torch.float64), torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of heads"):
        LinearAttention(10, 4)
    with pytest.raises(ValueError, match="unknown feature_map"):
        LinearAttention(16, 4, feature_map="tanh")
    with pytest.raises(ValueError, match="causal=False"):
        _layer("linear", causal=False).step(torch.randn(1, 16, dtype=torch.float64), {"state": None, "length": 0})
    with pytest.raises(ValueError, match="causal=False"):
        _layer("softmax", causal=False).step(torch.randn(1, 16, dtype=torch.float64), {})
    sm = _layer("softmax")
    cache = sm.init_cache(1, 1, dtype=torch.float64)
    sm.step(torch.randn(1, 16, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="KV cache is full"):
        sm.step(torch.randn(1, 16, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="no room for 2 more"):
        sm.prefill(torch.randn(1, 2, 16, dtype=torch.float64), cache)
    with pytest.raises(ValueError, match="causal=False"):
        _layer("linear", causal=False).prefill(torch.randn(1, 2, 16, dtype=torch.float64), {"state": None})
