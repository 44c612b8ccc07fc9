"""EMA: closed forms, the Keras zero-debias, swap-and-restore bit-exactness, trajectory invariance, name pairing."""

import pytest
import torch
from torch import nn

from kexue.errors import KexueError
from kexue.train.ema import EMA, canonical_name, decay_from_half_life, ema_update_reference


def small_net(dtype=torch.float64) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).to(dtype)


def perturb(model: nn.Module, gen: torch.Generator) -> None:
    """Stand-in for an optimiser step: move every float entry (parameters and BN statistics), bump integers."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
            else:
                t.add_(1)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("decay", [0.0, 0.3, 0.9, 1.0])
def test_closed_form_after_n_updates(decay):
    """Θ_n = α^n θ_0 + (1-α) Σ_s α^(n-s) θ_s for float entries; integer buffers are copies."""
    gen = torch.Generator().manual_seed(1)
    model = small_net()
    thetas = [snapshot(model)]
    ema = EMA(model, decay, dtype=torch.float64)
    for _ in range(6):
        perturb(model, gen)
        ema.update(model)
        thetas.append(snapshot(model))
    n = len(thetas) - 1
    averaged = ema.averaged()
    for name, value in averaged.items():
        if not value.is_floating_point():
            assert torch.equal(value, thetas[-1][name])
            continue
        expected = decay**n * thetas[0][name] + (1 - decay) * sum(decay ** (n - s) * thetas[s][name]
                                                                  for s in range(1, n + 1))
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    if decay == 0.0:  # a copy, bit for bit
        assert all(torch.equal(averaged[k], thetas[-1][k]) for k in averaged)
    if decay == 1.0:  # frozen at θ_0, bit for bit
        assert all(torch.equal(averaged[k], thetas[0][k]) for k in averaged if averaged[k].is_floating_point())


def test_bias_correction_is_keras_zero_debias():
    """b_n = α b_{n-1} + (1-α) θ_n with b_0 = 0 and Θ_n = b_n / (1 - α^n); θ_0 plays no part after one update."""
    gen = torch.Generator().manual_seed(2)
    model = small_net()
    alpha = 0.95
    ema = EMA(model, alpha, bias_correction=True, dtype=torch.float64)
    assert torch.equal(ema.averaged()["0.weight"], model[0].weight.detach())  # before any update: θ_0
    b = {k: torch.zeros_like(v) for k, v in snapshot(model).items() if v.is_floating_point()}
    for n in range(1, 5):
        perturb(model, gen)
        ema.update(model)
        theta = snapshot(model)
        for k in b:
            b[k] = alpha * b[k] + (1 - alpha) * theta[k]
        for k in b:
            torch.testing.assert_close(ema.averaged()[k], b[k] / (1 - alpha**n), rtol=1e-12, atol=1e-12)
    # after one update the debiased EMA equals θ_1 exactly in exact arithmetic
    one = small_net()
    ema1 = EMA(one, 0.999, bias_correction=True, dtype=torch.float64)
    perturb(one, gen)
    ema1.update(one)
    torch.testing.assert_close(ema1.averaged()["0.weight"], one[0].weight.detach(), rtol=1e-10, atol=1e-12)


def test_fast_update_matches_reference_loop():
    gen = torch.Generator().manual_seed(3)
    model = small_net(torch.float32)
    ema = EMA(model, 0.9)
    ref = {k: v.clone() for k, v in ema.shadow.items()}
    for _ in range(5):
        perturb(model, gen)
        ema.update(model)
        ema_update_reference(ref, model, 0.9)
    for k in ref:
        torch.testing.assert_close(ema.shadow[k], ref[k], rtol=1e-6, atol=1e-6)


def test_schedules_half_life_warmup_and_delay():
    assert decay_from_half_life(10) ** 10 == pytest.approx(0.5, rel=1e-14)
    model = small_net()
    ema = EMA(model, 0.999, update_after_step=2, warmup_power=0.75, warmup_gamma=1.0)
    assert ema.decay_at(1) == 0.0 and ema.decay_at(2) == 0.0
    assert ema.decay_at(3) == pytest.approx(1 - 2**-0.75)  # t = 1
    assert ema.decay_at(10**7) == 0.999  # clamped
    # power 3/4 reaches 0.999 after 10k steps (spec §10 arithmetic)
    assert EMA(model, 0.9999, warmup_power=0.75).decay_at(9999) == pytest.approx(0.999, abs=1e-6)
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):
        perturb(model, gen)
        ema.update(model)
        assert torch.equal(ema.shadow["0.weight"], model[0].weight.detach())  # delay = copy (float64 stays float64)
    with pytest.raises(KexueError, match="either decay or half_life"):
        EMA(model, 0.9, half_life=3)


def test_swap_restores_bit_for_bit_and_keeps_parameter_objects():
    gen = torch.Generator().manual_seed(5)
    model = small_net(torch.float32)
    ema = EMA(model, 0.5)
    for _ in range(3):
        perturb(model, gen)
        ema.update(model)
    before = snapshot(model)
    params = [id(p) for p in model.parameters()]
    averaged = ema.averaged()
    with ema.swap_into(model):
        assert [id(p) for p in model.parameters()] == params
        for k, v in model.state_dict().items():
            assert torch.equal(v, averaged[k].to(v.dtype)), k
        assert not torch.equal(model[0].weight, before["0.weight"])
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(RuntimeError, match="boom"), ema.swap_into(model):
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_copy_is_a_separate_module_with_the_averaged_weights():
    gen = torch.Generator().manual_seed(6)
    model = small_net(torch.float32).eval()
    ema = EMA(model, 0.7)
    perturb(model, gen)
    ema.update(model)
    averaged = ema.copy().eval()
    x = torch.randn(5, 3, generator=gen)
    with ema.swap_into(model):
        swapped = model(x)
    assert torch.equal(averaged(x), swapped)
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(averaged.parameters(), model.parameters(), strict=True))


def test_training_with_ema_leaves_the_raw_trajectory_bit_identical():
    def train(with_ema: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        ema = EMA(model, 0.9) if with_ema else None
        gen = torch.Generator().manual_seed(1)
        trajectory = []
        for step in range(12):
            x = torch.randn(16, 4, generator=gen)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
                if step % 3 == 0:
                    with ema.swap_into(model), torch.no_grad():
                        model.eval()
                        model(x)
                        model.train()
            trajectory.append(torch.cat([t.detach().flatten().float() for t in model.state_dict().values()]))
        return trajectory

    for a, b in zip(train(True), train(False), strict=True):
        assert torch.equal(a, b)


def test_buffer_policy_float_averaged_or_copied_integers_copied():
    gen = torch.Generator().manual_seed(7)
    for policy in ("average", "copy"):
        model = small_net(torch.float32)
        ema = EMA(model, 0.5, buffers=policy)
        perturb(model, gen)
        ema.update(model)
        bn = model[1]
        assert torch.equal(ema.shadow["1.num_batches_tracked"], bn.num_batches_tracked)
        copied = torch.equal(ema.shadow["1.running_mean"], bn.running_mean)
        assert copied == (policy == "copy")
        assert not torch.equal(ema.shadow["0.weight"], model[0].weight.detach())  # parameters always averaged


def test_low_precision_model_keeps_fp32_shadow():
    model = nn.Linear(64, 64).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.9999)
    assert ema.shadow["weight"].dtype == torch.float32
    with torch.no_grad():
        model.weight.fill_(1.5)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((64, 64), 1.0 + 0.5e-4), rtol=0, atol=1e-7)
    bf16 = torch.ones(64, 64, dtype=torch.bfloat16)  # a bf16 shadow loses the whole move (ulp at 1 is 2^-7)
    assert torch.equal(bf16.lerp(model.weight.detach(), 1e-4), bf16)


def test_wrapper_prefixes_pair_by_name_and_mismatch_is_an_error():
    assert canonical_name("_orig_mod.module.fc.weight") == "fc.weight"
    model = small_net(torch.float32)
    ema = EMA(model, 0.5)
    compiled = torch.compile(model)  # lazy: names get the _orig_mod. prefix without compiling anything
    assert next(iter(dict(compiled.named_parameters()))).startswith("_orig_mod.")
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(compiled)
    ema.update(nn.DataParallel(model))  # module. prefix
    assert torch.allclose(ema.shadow["0.weight"], model[0].weight - 0.25)
    wrapped_first = EMA(nn.DataParallel(model), 0.5)
    assert set(wrapped_first.shadow) == set(ema.shadow)
    with pytest.raises(KexueError, match="do not match"):
        ema.update(nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(KexueError, match=r"shape \(5, 3\)"):
        ema.update(nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)))


def test_state_dict_round_trip_and_mismatch():
    gen = torch.Generator().manual_seed(8)
    model = small_net(torch.float32)
    ema = EMA(model, 0.9, bias_correction=True)
    for _ in range(3):
        perturb(model, gen)
        ema.update(model)
    other = EMA(small_net(torch.float32), 0.9, bias_correction=True)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3
    assert all(torch.equal(other.averaged()[k], v) for k, v in ema.averaged().items())
    state = ema.state_dict()
    del state["shadow.0.bias"]
    with pytest.raises(KexueError, match=r"missing: \['0.bias'\]"):
        other.load_state_dict(state)


@pytest.mark.parametrize("kwargs, match", [
    ({"decay": 1.5}, "decay must be a number in"),
    ({"decay": -0.1}, "decay must be a number in"),
    ({"decay": 1.0, "bias_correction": True}, "bias_correction needs decay < 1"),
    ({"half_life": 0}, "half_life must be a positive"),
    ({"decay": 0.9, "buffers": "mean"}, "buffers must be"),
    ({"decay": 0.9, "update_after_step": -1}, "update_after_step"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(KexueError, match=match):
        EMA(nn.Linear(2, 2), **kwargs)
