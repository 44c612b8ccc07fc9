"""EMA: closed forms, the Keras zero-debias, swap-and-restore bit-exactness, trajectory invariance, name pairing."""

import pytest
import torch
from torch import nn

from kexue.errors import KexueError
from kexue.train._lerp_kernel import PIECE
from kexue.train.ema import EMA, _LerpPlan, canonical_name, decay_from_half_life, ema_update_reference


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_cpu_plan_matches_foreach_and_follows_replaced_storage(dtype):
    """Tensors longer than one piece, tiny ones, a non-contiguous one: the compiled plan agrees with
    ``torch._foreach_lerp_`` to one rounding (ATen fuses the multiply-add), copies exactly at w = 1, leaves the
    shadow untouched at w = 0, and after ``p.data = ...`` averages the new storage (sorted again if it is a view)."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(1100, 300), (300, 300), (7,), (200, 170), (3, 5), (PIECE + 3,)]
    lives = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    lives[0] = lives[0].t().contiguous().t()  # a transposed view: left to _foreach_lerp_
    shadows = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    expected = [t.clone() for t in shadows]
    plan = _LerpPlan(shadows, lives)
    assert len(plan.rest[0]) == 1 and len(plan.kernel.sizes) == 2 + 1 + 1 + 1 + 2  # 300x300 and the last: 2 pieces
    for weight in (0.001, 0.3, 0.7):
        plan(weight)
        torch._foreach_lerp_(expected, lives, weight)
        assert torch.equal(shadows[0], expected[0])  # the view went through _foreach_lerp_ itself
        for got, want in zip(shadows, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)
        expected = [t.clone() for t in shadows]  # compare the next step from the same start
    before = [t.clone() for t in shadows]
    plan(0.0)
    assert all(torch.equal(a, b) for a, b in zip(shadows, before, strict=True))
    plan(1.0)
    assert all(torch.equal(a, b) for a, b in zip(shadows, lives, strict=True))
    param = nn.Parameter(torch.zeros(300, 300, dtype=dtype))
    shadow = torch.zeros(300, 300, dtype=dtype)
    plan = _LerpPlan([shadow], [param])
    param.data = torch.ones(300, 300, dtype=dtype)  # new storage (what model.to() does)
    plan(0.5)
    assert torch.equal(shadow, torch.full((300, 300), 0.5, dtype=dtype))
    param.data = torch.full((300, 300), 2.0, dtype=dtype).t()  # new storage, now a non-contiguous view
    plan(0.5)
    assert torch.equal(shadow, torch.full((300, 300), 1.25, dtype=dtype)) and len(plan.rest[0]) == 1


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


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_fp32_shadow_tracks_the_closed_form_while_a_low_precision_shadow_stalls(low):
    """decay 0.9999, weights jumping 1 -> 1.5 and then drifting: the fp32 shadow follows Θ_n in closed form (from
    the model's own low-precision values), a shadow kept in the model's dtype never moves."""
    decay, steps = 0.9999, 200
    model = nn.Linear(16, 16, bias=False).to(low)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema32, ema_low = EMA(model, decay), EMA(model, decay, dtype=low)
    assert ema32.shadow["weight"].dtype == torch.float32 and ema_low.shadow["weight"].dtype == low
    thetas = [model.weight.detach().double().clone()]
    for s in range(1, steps + 1):
        with torch.no_grad():
            model.weight.fill_(1.5 + 0.002 * s)  # rounded to the model's dtype
        ema32.update(model)
        ema_low.update(model)
        thetas.append(model.weight.detach().double().clone())
    n = len(thetas) - 1
    closed = decay**n * thetas[0] + (1 - decay) * sum(decay ** (n - s) * thetas[s] for s in range(1, n + 1))
    torch.testing.assert_close(ema32.shadow["weight"].double(), closed, rtol=1e-6, atol=0)
    assert float(closed[0, 0]) - 1.0 > 0.01  # the true average moved by 2%: far more than an fp32 ulp
    assert torch.equal(ema_low.shadow["weight"], torch.ones(16, 16, dtype=low))  # stalled at θ_0


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


@pytest.mark.parametrize("policy", ["average", "copy", "keep"])
def test_batchnorm_statistics_by_policy(policy):
    decay, gen = 0.6, torch.Generator().manual_seed(9)
    model = bn_net().double()
    history = [snapshot(model)]
    ema = EMA(model, decay, buffers=policy, dtype=torch.float64)
    for _ in range(4):
        perturb(model, gen)
        ema.update(model)
        history.append(snapshot(model))
    n = len(history) - 1
    for name in ("1.running_mean", "1.running_var"):
        closed = decay**n * history[0][name] + (1 - decay) * sum(decay ** (n - s) * history[s][name]
                                                                 for s in range(1, n + 1))
        expected = {"average": closed, "copy": history[-1][name], "keep": history[0][name]}[policy]
        torch.testing.assert_close(ema.shadow[name], expected, rtol=1e-12, atol=1e-12)
    ints = {"average": history[-1], "copy": history[-1], "keep": history[0]}[policy]["1.num_batches_tracked"]
    assert torch.equal(ema.shadow["1.num_batches_tracked"], ints)  # never averaged
    with ema.swap_into(model):  # whatever the policy, swapping in and out is lossless
        assert torch.equal(model[1].running_var, ema.shadow["1.running_var"])
    assert torch.equal(model[1].running_var, history[-1]["1.running_var"])


def test_buffer_patterns_first_match_wins_and_unmatched_pattern_is_an_error():
    model = bn_net()
    ema = EMA(model, 0.5, buffers={"*.running_mean": "copy", "*.running_*": "keep"})
    assert ema.policy["1.running_mean"] == "copy" and ema.policy["1.running_var"] == "keep"
    assert ema.policy["0.weight"] == "average" and ema.policy["1.num_batches_tracked"] == "copy"
    with pytest.raises(KexueError, match=r"patterns \['\*.running_avg'\] match no buffer"):
        EMA(model, 0.5, buffers={"*.running_avg": "copy"})
    with pytest.raises(KexueError, match="buffers must map name patterns"):
        EMA(model, 0.5, buffers={"*": "mean"})


def test_spectral_norm_vectors_are_never_averaged():
    """Both spectral-norm APIs: u/v are copied under buffers="average" (still unit vectors, exactly the live ones);
    averaging two different unit vectors would shrink them, and asking for it by pattern is an error."""
    from torch.nn.utils import parametrizations, spectral_norm

    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.spectral_norm(nn.Linear(6, 5)), nn.Tanh(),
                          spectral_norm(nn.Linear(5, 4)))
    ema = EMA(model, 0.9)
    vectors = ["0.parametrizations.weight.0._u", "0.parametrizations.weight.0._v", "2.weight_u", "2.weight_v"]
    assert all(ema.policy[v] == "copy" for v in vectors)
    before = {v: ema.shadow[v].clone() for v in vectors}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):  # training-mode forwards run the power iteration: u/v move
        loss = model(torch.randn(8, 6)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    live = dict(model.named_buffers())
    for v in vectors:
        assert torch.equal(ema.shadow[v], live[v])
        assert float(ema.shadow[v].norm()) == pytest.approx(1.0, abs=1e-5)
        assert not torch.allclose(before[v], live[v])
        mixed = 0.9 * before[v] + 0.1 * live[v]  # what averaging would have stored after one step
        assert float(mixed.norm()) < 1.0 - 1e-4
    assert ema.policy["0.parametrizations.weight.original"] == "average"  # the weight itself is averaged
    with pytest.raises(KexueError, match="spectral-norm power-iteration vector"):
        EMA(model, 0.9, buffers={"2.weight_*": "average"})
    assert EMA(model, 0.9, buffers={"*_u": "keep"}).policy["2.weight_u"] == "keep"


def test_ddp_and_compiled_models_share_plain_keys_and_state_dicts(tmp_path):
    """EMAs of a DDP-wrapped (gloo, one process) and of a torch.compile-wrapped model use the plain module's names;
    their state dicts load into each other and into an EMA of the plain model, and the averaged weights load into
    the plain module with ``strict=True``."""
    import torch.distributed as dist

    gen = torch.Generator().manual_seed(10)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = small_net(torch.float32)
        ddp = nn.parallel.DistributedDataParallel(model)
        compiled = torch.compile(model)  # lazy: nothing is compiled until a forward
        emas = {"ddp": EMA(ddp, 0.8), "compiled": EMA(compiled, 0.8), "plain": EMA(model, 0.8)}
        plain_keys = {f"shadow.{k}" for k in model.state_dict()}
        for _ in range(3):
            perturb(model, gen)
            emas["ddp"].update(ddp)
            emas["compiled"].update(compiled)
            emas["plain"].update(model)
        states = {k: e.state_dict() for k, e in emas.items()}
        for state in states.values():
            assert {k for k in state if k.startswith("shadow.")} == plain_keys
        for state in states.values():
            for wrapped in (ddp, compiled, model):
                fresh = EMA(wrapped, 0.8)
                fresh.load_state_dict(state)
                assert all(torch.equal(fresh.shadow[k], emas["plain"].shadow[k]) for k in fresh.shadow)
        prefixed = {k.replace("shadow.", "shadow._orig_mod.module.", 1): v for k, v in states["plain"].items()}
        emas["ddp"].load_state_dict(prefixed)  # checkpoints written by other tools with prefixes load too
        target = small_net(torch.float32)
        target.load_state_dict(emas["ddp"].averaged(), strict=True)
        emas["compiled"].copy_to(ddp)
        assert torch.equal(model[0].weight, emas["plain"].shadow["0.weight"])
    finally:
        if started:
            dist.destroy_process_group()
