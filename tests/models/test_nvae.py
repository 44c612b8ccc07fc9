"""kexue.models.nvae: architecture, shared top-down tower, residual posteriors, sampling, BN re-estimation, errors."""

import copy

import pytest
import torch
from torch import nn

from kexue.models.nvae import NVAE, NVAEConfig, count_parameters, latent_dims
from kexue.models.nvae.cells import BNSwish, Cell, Conv2d, FactorizedReduce

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> NVAEConfig:
    base = dict(image_size=8, padding=0, enc_channels=4, dec_channels=4, num_preprocess_blocks=1,
                num_postprocess_blocks=1, num_preprocess_cells=1, num_postprocess_cells=1, num_latent_scales=2,
                groups_per_scale=2, latent_channels=3, enc_cells_per_group=1, dec_cells_per_group=1)
    base.update(kw)
    return NVAEConfig(**base)


def binary(b=4, c=1, size=8, seed=0):
    return torch.bernoulli(torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)))


# --- structure ----------------------------------------------------------------------------------------------


def test_shapes_groups_and_latent_sizes():
    cfg = tiny(groups_per_scale=4, min_groups_per_scale=1)
    model = NVAE(cfg)
    assert model.groups_per_scale == [4, 2]  # finest first, halved at the coarser scale
    out = model(binary())
    assert out.params.shape == (4, 1, 8, 8)
    shapes = [tuple(g.z.shape) for g in out.groups]  # decoder order: coarsest first
    assert shapes == [(4, 3, 2, 2)] * 2 + [(4, 3, 4, 4)] * 4
    assert [g.scale for g in out.groups] == [0, 0, 1, 1, 1, 1]
    assert latent_dims(cfg) == 2 * 3 * 4 + 4 * 3 * 16
    assert NVAEConfig(groups_per_scale=16, num_latent_scales=5, min_groups_per_scale=4).groups == [16, 8, 4, 4, 4]
    assert NVAEConfig().groups == [10, 5]
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_padded_mnist_model_and_colour_model():
    model = NVAE(tiny(image_size=6, padding=1))  # 6 + 2 = 8
    assert model(binary(size=6)).params.shape == (4, 1, 6, 6)
    colour = NVAE(tiny(image_channels=3, likelihood="logistic_mixture", num_mix=2))
    x = torch.randint(0, 256, (2, 3, 8, 8)) / 255
    out = colour(x)
    assert out.params.shape == (2, 2 * 10, 8, 8)
    assert colour.likelihood(out.params).log_prob(x).shape == (2, 8, 8)


@pytest.mark.parametrize("kind, shape", [("normal_enc", (2, 8, 8, 8)), ("down_enc", (2, 16, 4, 4)),
                                         ("normal_dec", (2, 8, 8, 8)), ("up_dec", (2, 4, 16, 16)),
                                         ("up_post", (2, 4, 16, 16)), ("down_pre", (2, 16, 4, 4))])
def test_cell_shapes_and_residual_scaling(kind, shape):
    cell = Cell(8, kind)
    s = torch.randn(2, 8, 8, 8)
    out = cell(s)
    assert out.shape == shape
    torch.testing.assert_close(out, cell.skip(s) + 0.1 * cell.se(cell.branch(s)))


def test_factorized_reduce_sees_every_input_pixel():
    fr = FactorizedReduce(3, 8)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    fr(x).sum().backward()
    assert (x.grad.abs().sum(1) > 0).all()


def test_weight_norm_sets_each_output_channel_norm():
    conv = Conv2d(3, 5, 3)
    with torch.no_grad():
        conv.log_weight_norm.copy_(torch.log(torch.arange(1.0, 6.0)).view(-1, 1, 1, 1))
    norms = conv.normalized_weight().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.arange(1.0, 6.0), rtol=1e-4, atol=1e-4)
    assert Conv2d(3, 5, 1, weight_norm=False).log_weight_norm is None


def test_bn_swish_checkpointing_matches_the_plain_layer():
    torch.manual_seed(0)
    plain = BNSwish(6)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint = True
    with torch.no_grad():
        plain.bn.weight.uniform_(0.5, 1.5)
        plain.bn.bias.uniform_(-0.5, 0.5)
        ckpt.bn.load_state_dict(plain.bn.state_dict())
    for _ in range(2):
        x = torch.randn(5, 6, 4, 4) * 3 + 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = plain(xa), ckpt(xb)
        torch.testing.assert_close(ya, yb)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(plain.bn.weight.grad, ckpt.bn.weight.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(plain.bn, name), getattr(ckpt.bn, name))


def test_model_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(1)
    a = NVAE(tiny())
    b = copy.deepcopy(a)
    b.set_checkpointing(True)
    x = binary()
    grads = []
    for model in (a, b):
        torch.manual_seed(2)
        out = model(x)
        loss = -model.likelihood(out.params).log_prob(x).sum() + sum(g.log_q.sum() - g.log_p.sum()
                                                                     for g in out.groups)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


# --- the shared top-down tower and residual posteriors -------------------------------------------------------


def _touched(loss: torch.Tensor, model: nn.Module) -> set[str]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_top_down_tower_is_shared_by_posterior_and_prior():
    torch.manual_seed(3)
    model = NVAE(tiny())
    x = binary()
    # posterior path: the residual posteriors of groups >= 1 are computed from the top-down state
    out = model(x)
    posterior = _touched(sum(g.q.mu.sum() + g.q.sigma.sum() for g in out.groups[1:]), model)
    # prior path (sampling): the decoder output
    prior = _touched(model._top_down(None, 4).params.sum(), model)
    last = f"dec_combiners.{model.num_groups - 1}."  # feeds only the output, not a later posterior
    tower = {n for n, _ in model.named_parameters()
             if n.startswith(("dec_tower.", "up_cells.", "h", "dec_combiners.")) and not n.startswith(last)}
    assert tower and tower <= posterior & prior  # one set of weights serves both paths
    assert not any(n.startswith(("stem", "pre_process", "enc_tower", "posterior_heads")) for n in prior)
    ptrs = [p.data_ptr() for p in model.parameters()]
    assert len(ptrs) == len(set(ptrs))  # and it is not duplicated under another name


def test_zero_posterior_head_makes_the_posterior_equal_the_prior():
    torch.manual_seed(4)
    model = NVAE(tiny())
    with torch.no_grad():
        for head in model.posterior_heads[1:]:
            head.weight.zero_()
            head.bias.zero_()
            head.log_weight_norm.fill_(-30.0)
    out = model(binary())
    for g in out.groups[1:]:
        torch.testing.assert_close(g.q.mu, g.p.mu)
        torch.testing.assert_close(g.q.sigma, g.p.sigma)


def test_normal_clamps():
    from kexue.models.nvae import Normal

    n = Normal.from_raw(torch.tensor([100.0, 0.0, -100.0]), torch.tensor([100.0, 0.0, -100.0]), temperature=0.5)
    assert n.mu.abs().max() <= 5.0
    torch.testing.assert_close(n.sigma, 0.5 * (torch.exp(5 * torch.tanh(torch.tensor([20.0, 0.0, -20.0]))) + 0.01))


# --- sampling, encoding, importance weights --------------------------------------------------------------------


def test_sampling_at_temperature_zero_is_deterministic():
    torch.manual_seed(5)
    model = NVAE(tiny()).eval()
    a = model.sample(3, 0.0, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, 0.0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, a[:1].expand_as(a), rtol=0, atol=0)  # every draw is the same image
    c = model.sample(3, 1.0, generator=torch.Generator().manual_seed(1))
    d = model.sample(3, 1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)
    # at t = 0 every group takes its prior mean, starting from z_1 = E[z_1] = 0
    out = model._top_down(None, 3, temperature=0.0)
    assert out.groups[0].z.abs().max() == 0
    for g in out.groups[1:]:
        torch.testing.assert_close(g.z, g.p.mu, rtol=0, atol=0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, -0.1)


def test_encode_returns_per_group_posterior_codes():
    torch.manual_seed(6)
    model = NVAE(tiny()).eval()
    x = binary()
    codes = model.encode(x)
    assert len(codes) == model.num_groups
    for code, g in zip(codes, model(x).groups, strict=True):
        assert code.mu.shape == code.sigma.shape == code.z.shape == g.z.shape
        torch.testing.assert_close(code.z, code.mu)  # deterministic codes: each group at its posterior mean
    again = model.encode(x)
    for a, b in zip(codes, again, strict=True):
        torch.testing.assert_close(a.mu, b.mu, rtol=0, atol=0)


def test_log_weights_match_the_forward_pass_and_the_kl():
    torch.manual_seed(7)
    model = NVAE(tiny()).eval()
    x = binary(b=2)
    torch.manual_seed(8)
    log_px, log_pz, log_qz = model.log_weights(x, 1)
    torch.manual_seed(8)
    with torch.no_grad():
        out = model(x)
    assert log_px.shape == (1, 2)
    torch.testing.assert_close(log_px[0], model.likelihood(out.params).log_prob(x).flatten(1).sum(1))
    torch.testing.assert_close(log_pz[0], sum(g.log_p for g in out.groups))
    torch.testing.assert_close(log_qz[0], sum(g.log_q for g in out.groups))
    # E_q[log q - log p] is the KL: the Monte-Carlo mean over samples matches the average of the closed forms
    from kexue.losses.vae import group_kl

    torch.manual_seed(9)
    k = 2000
    _, log_pz, log_qz = model.log_weights(x, k)
    mc = log_qz - log_pz  # [k, 2]
    with torch.no_grad():
        closed = sum(group_kl(g) for g in model(x.repeat_interleave(k, 0)).groups).view(2, k).t()
    tol = 5 * (mc.std(0) + closed.std(0)) / k**0.5
    assert ((mc.mean(0) - closed.mean(0)).abs() < tol).all()


def test_flows_run_and_their_kl_is_the_sample_estimate():
    torch.manual_seed(10)
    model = NVAE(tiny(num_flows=1))
    out = model(binary())
    assert all(g.flow for g in out.groups)
    from kexue.losses.vae import group_kl

    torch.testing.assert_close(group_kl(out.groups[1]), out.groups[1].log_q - out.groups[1].log_p)


def test_bn_readjustment_reestimates_only_the_generative_statistics():
    torch.manual_seed(11)
    model = NVAE(tiny())
    for _ in range(3):
        model(binary())  # some training-mode statistics
    enc = {n: b.clone() for n, b in model.named_buffers() if n.startswith(("pre_process", "enc_tower"))}
    gen_bn = model.dec_tower[1][0][0].branch.layers[0]  # first BN of a decoder cell
    seen = []
    hook = gen_bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    model.readjust_bn(temperature=0.7, num_batches=5, batch_size=6, generator=torch.Generator().manual_seed(0))
    hook.remove()
    assert not model.training
    assert len(seen) == 5
    # cumulative re-estimation: the running mean is the plain average of the batch means
    torch.testing.assert_close(gen_bn.running_mean, torch.stack([s.mean((0, 2, 3)) for s in seen]).mean(0))
    torch.testing.assert_close(gen_bn.running_var, torch.stack([s.var((0, 2, 3)) for s in seen]).mean(0))
    assert gen_bn.momentum == 0.05
    for n, b in model.named_buffers():
        if n in enc:
            torch.testing.assert_close(b, enc[n], rtol=0, atol=0)


# --- bad input ---------------------------------------------------------------------------------------------------


def test_image_size_must_fit_the_scales():
    with pytest.raises(ValueError, match=r"30 must be divisible by 2 \*\* \(num_preprocess_blocks \+ "
                                         r"num_latent_scales - 1\) = 8"):
        NVAE(NVAEConfig(image_size=28, padding=1))
    model = NVAE(tiny())
    with pytest.raises(ValueError, match=r"expects images \[B, 1, 8, 8\].*divisible by .* = 4"):
        model(binary(size=12))
    with pytest.raises(ValueError, match=r"expects images \[B, 1, 8, 8\]"):
        model(binary(c=3))


def test_odd_channel_counts_are_refused():
    with pytest.raises(ValueError, match="enc_channels must be even"):
        NVAE(tiny(enc_channels=5))
    with pytest.raises(ValueError, match="dec_channels must be even"):
        NVAE(tiny(dec_channels=7))
    with pytest.raises(ValueError, match="latent_channels must be a positive int"):
        NVAE(tiny(latent_channels=0))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        NVAE(tiny(likelihood="gaussian"))


def test_bernoulli_likelihood_refuses_non_binary_pixels():
    model = NVAE(tiny())
    x = torch.rand(2, 1, 8, 8)
    out = model(x)  # the network itself takes any pixels in [0, 1] ...
    with pytest.raises(ValueError, match=r"binary pixels \(0 or 1\).*torch.bernoulli"):
        model.likelihood(out.params).log_prob(x)  # ... the Bernoulli likelihood does not
