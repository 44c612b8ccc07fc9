"""kexue.models.transformer: decoding with recurrent state / KV cache equals re-running the model."""

import pytest
import torch

from kexue.models.transformer import Transformer, TransformerConfig
from kexue.train.capture import capture


def _model(attention, fmap="elu"):
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=11, max_len=24, dim=16, depth=2, heads=2, attention=attention,
                            feature_map=fmap, chunk_size=4)
    return Transformer(cfg, generator=torch.Generator().manual_seed(0)).double().eval()


@pytest.mark.parametrize("attention,fmap", [("linear", "elu"), ("linear", "favor"), ("softmax", "elu")])
def test_forward_step_equals_forward(attention, fmap):
    m = _model(attention, fmap)
    x = torch.randint(0, 11, (2, 17))
    full = m(x)
    caches = m.init_caches(2, 17)
    steps = torch.stack([m.forward_step(x[:, t], t, caches) for t in range(17)], 1)
    torch.testing.assert_close(steps, full)


@pytest.mark.parametrize("attention,fmap", [("linear", "elu"), ("linear", "efficient"), ("softmax", "elu")])
def test_prefill_equals_forward_steps(attention, fmap):
    m = _model(attention, fmap)
    x = torch.randint(0, 11, (2, 17))
    full = m(x)
    caches = m.init_caches(2, 17)
    torch.testing.assert_close(m.prefill(x[:, :9], 0, caches), full[:, 8])
    torch.testing.assert_close(m.prefill(x[:, 9:15], 9, caches), full[:, 14])
    torch.testing.assert_close(torch.stack([m.forward_step(x[:, t], t, caches) for t in (15, 16)], 1), full[:, 15:])


def test_generate_reads_the_prompt_in_one_call(monkeypatch):
    # The prompt goes through prefill once; forward_step runs only for the sampled tokens (all but the last).
    m = _model("linear")
    calls = {"prefill": 0, "forward_step": 0}
    for name in calls:
        method = getattr(m, name)

        def counted(*args, name=name, method=method):
            calls[name] += 1
            return method(*args)

        monkeypatch.setattr(m, name, counted)
    m.generate(torch.randint(0, 11, (2, 9)), 5)
    assert calls == {"prefill": 1, "forward_step": 4}


@pytest.mark.parametrize("attention", ["linear", "softmax"])
def test_generate_with_cache_equals_without(attention):
    m = _model(attention)
    prompt = torch.randint(0, 11, (3, 4))
    a = m.generate(prompt, 12, generator=torch.Generator().manual_seed(1))
    b = m.generate(prompt, 12, use_cache=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(a[:, :4], prompt) and a.shape == (3, 16)
    greedy = m.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy[:, 4], m(prompt)[:, -1].argmax(-1))


def test_generate_decodes_linear_attention_with_a_constant_size_state():
    m = _model("linear")
    caches = m.init_caches(2, 24)
    sizes = set()
    for t in range(20):
        m.forward_step(torch.randint(0, 11, (2,)), t, caches)
        sizes.add(sum(c["state"].s.numel() + c["state"].z.numel() for c in caches))
    assert len(sizes) == 1 and all("k" not in c for c in caches)


def test_redraw_features_changes_favor_layers_only():
    m = _model("linear", "favor")
    x = torch.randint(0, 11, (1, 8))
    before = m(x)
    omegas = [b.attn.omega.clone() for b in m.blocks]
    m.redraw_features(torch.Generator().manual_seed(5))
    assert all(not torch.equal(o, b.attn.omega) for o, b in zip(omegas, m.blocks, strict=True))
    assert not torch.allclose(before, m(x))
    elu = _model("linear")
    y = elu(x)
    elu.redraw_features()
    torch.testing.assert_close(elu(x), y)


def test_sampling_draws_from_the_softmax_of_the_logits():
    from kexue.models.transformer import _sample

    logits = torch.tensor([[0.0, 1.0, 2.0, -30.0]]).expand(40000, 4)
    tokens = _sample(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).double() / len(tokens)
    torch.testing.assert_close(freq, torch.softmax(logits[0].double(), 0), atol=0.01, rtol=0)  # ~5 sigma
    hot = _sample(logits[:2] * 3, 2.0, torch.Generator().manual_seed(1))  # temperature divides the logits
    assert hot.shape == (2,) and torch.equal(_sample(logits[:3], 0, None), torch.full((3,), 2))


def test_causal_model_ignores_future_tokens():
    m = _model("linear")
    x = torch.randint(0, 11, (1, 20))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 3) % 11
    torch.testing.assert_close(m(x)[:, :10], m(y)[:, :10])


def test_attention_maps_are_captured_from_forward():
    m = _model("softmax")
    x = torch.randint(0, 11, (2, 9))
    with capture(None, taps=["blocks.*.attn.weights"]) as cap:
        m(x)
    w = cap["blocks.1.attn.weights"]
    assert w.shape == (2, 2, 9, 9) and (w.triu(1) == 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="attention must be"):
        Transformer(TransformerConfig(attention="sparse"))
    m = _model("linear")
    with pytest.raises(ValueError, match="exceeds max_len"):
        m.generate(torch.zeros(1, 4, dtype=torch.long), 30)
    with pytest.raises(ValueError, match="tokens must be int64"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="prompt must be int64"):
        m.generate(torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="temperature >= 0"):
        m.generate(torch.zeros(1, 4, dtype=torch.long), 2, temperature=-1.0)
