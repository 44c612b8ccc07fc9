"""kexue.ops.attention: linear attention forms tied together, forward and backward (spec linear-attention.md §5)."""

import math

import pytest
import torch

from kexue.errors import KexueError
from kexue.ops.attention import (
    AttentionInputError,
    CosFeatureMap,
    FavorFeatureMap,
    _decode_kernel,
    _scan_kernel,
    causal_dot_product,
    causal_dot_product_dense,
    causal_linear_attention_chunked,
    causal_linear_attention_dense,
    empty_cache,
    get_feature_map,
    linear_attention,
    linear_attention_step,
    linear_attention_weights,
)
from kexue.ops.attention import causal as causal_mod
from kexue.ops.attention.causal import linear_attention_state, step_mapped
from kexue.profiling import peak_bytes

MAPS = ["elu", "relu", "cos", "favor", "efficient"]


def _inputs(b=2, h=3, n=37, d=5, m=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, h, n, d, generator=g, dtype=dtype), torch.randn(b, h, n, d, generator=g, dtype=dtype)
    return q, k, torch.randn(b, h, n, m, generator=g, dtype=dtype)


def _mask(b=2, n=37):
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[0, -5:] = True  # right padding
    mask[1, :3] = True  # left padding: the first queries see no key at all
    return mask


def _fmap(name, d=5):
    return get_feature_map(name, d, generator=torch.Generator().manual_seed(3))


def _run(q, k, v, grad_out, **kw):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = linear_attention(q, k, v, **kw)
    out.backward(grad_out)
    return out.detach(), q.grad, k.grad, v.grad


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# --- non-causal ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["elu", "relu", "cos", "favor"])
def test_noncausal_equals_explicit_normalised_matrix(name):
    # phi(Q)(phi(K)^T V) / (phi(Q) phi(K)^T 1) == the explicit N x N normalised form, computed here by hand.
    q, k, v = _inputs(dtype=torch.float64)
    fm = _fmap(name)
    scores = fm.forward_queries(q) @ fm.forward_keys(k).transpose(-1, -2)
    expected = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(linear_attention(q, k, v, feature_map=fm), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(linear_attention(q, k, v, feature_map=fm, impl="dense"), expected, rtol=1e-10,
                               atol=1e-12)


def test_noncausal_with_padding_ignores_padded_keys():
    q, k, v = _inputs()
    mask = _mask()
    out = linear_attention(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 100.0  # garbage in padded slots changes nothing
    v2[mask[:, None, :, None].expand_as(v2)] = -100.0
    torch.testing.assert_close(linear_attention(q, k2, v2, key_padding_mask=mask), out)


# --- causal: three forms tied to the dense masked reference -----------------------------------------------------


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("impl", ["chunked", "recurrent"])
def test_causal_forms_agree_with_dense_fp32(name, impl):
    # Odd N (not a multiple of the chunk), D != M, padding masks; forward and backward to 1e-5.
    q, k, v = _inputs()
    if name == "relu":
        # A relu query with every feature <= 0 maps to 0 and one with a single tiny feature has a near-zero
        # normaliser; every fp32 form, the dense one included, then loses digits (1e-5 relative on grad q). Shift
        # the queries so each keeps a clearly positive feature: this test is about the forms, not the conditioning.
        q = q + 0.5
    mask = _mask()
    g = torch.randn(2, 3, 37, 7, generator=torch.Generator().manual_seed(9))
    fm = _fmap(name)
    # The dense reference evaluated in float64 on the same fp32 inputs: the "true" values for these inputs.
    ref = _run(q.double(), k.double(), v.double(), g.double(), causal=True, feature_map=fm, key_padding_mask=mask,
               impl="dense")
    dense32 = _run(q, k, v, g, causal=True, feature_map=fm, key_padding_mask=mask, impl="dense")
    got = _run(q, k, v, g, causal=True, feature_map=fm, key_padding_mask=mask, impl=impl, chunk_size=8)
    for a, a32, b in zip(got, dense32, ref, strict=True):
        assert torch.isfinite(a).all()
        assert _rel(a.double(), b) < 1e-5
        assert _rel(a, a32) < 2e-5  # and with the fp32 dense form itself


@pytest.mark.parametrize("chunk", [1, 3, 16, 64])
def test_chunk_size_does_not_change_result(chunk):
    q, k, v = _inputs(dtype=torch.float64)
    ref = linear_attention(q, k, v, causal=True, impl="dense")
    torch.testing.assert_close(linear_attention(q, k, v, causal=True, chunk_size=chunk), ref, rtol=1e-10, atol=1e-12)


def test_chunked_batch_equals_one_sequence_at_a_time():
    # All chunks of all sequences share one flat batch; no state may cross from one sequence into the next.
    q, k, v = _inputs(b=3, h=2, n=40, dtype=torch.float64)
    pq, pk = (torch.nn.functional.elu(t) + 1 for t in (q, k))
    g = torch.randn_like(v)
    leaves = [t.clone().requires_grad_() for t in (pq, pk, v)]
    out = causal_linear_attention_chunked(*leaves, 1e-6, 8)
    out.backward(g)
    for i in range(3):
        for j in range(2):
            one = [t[i, j].clone().requires_grad_() for t in (pq, pk, v)]
            ref = causal_linear_attention_dense(*one)
            ref.backward(g[i, j])
            torch.testing.assert_close(out[i, j], ref)
            for leaf, single in zip(leaves, one, strict=True):
                torch.testing.assert_close(leaf.grad[i, j], single.grad)


def test_chunked_forward_is_the_same_with_and_without_grad():
    q, k, v = _inputs()
    with torch.no_grad():
        a = linear_attention(q, k, v, causal=True, chunk_size=8)
    b = linear_attention(q.requires_grad_(), k, v, causal=True, chunk_size=8)
    assert torch.equal(a, b.detach())


@pytest.mark.parametrize("name", ["elu", "cos", "favor", "efficient"])
def test_gradcheck_chunked_float64(name):
    q, k, v = (t.requires_grad_() for t in _inputs(b=2, h=1, n=9, d=3, m=2, dtype=torch.float64))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, -2:] = True
    mask[1, :2] = True
    fm = _fmap(name, 3)
    assert torch.autograd.gradcheck(
        lambda q, k, v: linear_attention(q, k, v, causal=True, feature_map=fm, key_padding_mask=mask, chunk_size=4),
        (q, k, v))


def test_gradcheck_custom_function_directly():
    # The custom autograd.Function (prefix/suffix backward), on mapped positive features; 3 chunks per sequence.
    g = torch.Generator().manual_seed(1)
    pq = torch.rand(2, 12, 3, generator=g, dtype=torch.float64)
    pk = torch.rand(2, 12, 3, generator=g, dtype=torch.float64)
    v = torch.randn(2, 12, 2, generator=g, dtype=torch.float64)
    args = tuple(t.requires_grad_() for t in (pq, pk, v))
    assert torch.autograd.gradcheck(lambda a, b, c: causal_linear_attention_chunked(a, b, c, 1e-6, 4), args)


def test_gradcheck_recurrent_step_float64():
    q, k, v = (t.requires_grad_() for t in _inputs(b=1, h=2, n=4, d=3, m=2, dtype=torch.float64))

    def decode(q, k, v):
        state, outs = None, []
        for t in range(q.shape[2]):
            out, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
            outs.append(out)
        return torch.stack(outs, 2)

    assert torch.autograd.gradcheck(decode, (q, k, v))


def test_causal_output_unchanged_by_future_inputs():
    q, k, v = _inputs()
    i = 20
    for name in MAPS:
        fm = _fmap(name)
        base = linear_attention(q, k, v, causal=True, feature_map=fm, chunk_size=8)
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        q2[:, :, i + 1 :] += 3.0
        k2[:, :, i + 1 :] *= -5.0
        v2[:, :, i + 1 :] = 7.0
        changed = linear_attention(q2, k2, v2, causal=True, feature_map=fm, chunk_size=8)
        # Equal up to BLAS summation order (the masked entries are exact zeros, but blocking may differ).
        torch.testing.assert_close(changed[:, :, : i + 1], base[:, :, : i + 1], rtol=1e-6, atol=1e-6)
        assert not torch.allclose(changed[:, :, i + 1 :], base[:, :, i + 1 :])


def test_fast_path_memory_grows_linearly_without_a_per_position_state():
    # Peak allocator bytes of forward + backward (outputs and gradients included) at N and 4N. The naive cumsum form
    # stores S_i for every position (N x D x M per head: 4 MiB here at N=512); the chunked one stays near a few
    # [N, D]-sized tensors.
    h, d, m = 2, 32, 32

    def peak(n):
        q, k, v = (torch.randn(1, h, n, f).requires_grad_() for f in (d, d, m))
        return peak_bytes(lambda: linear_attention(q, k, v, causal=True).backward(torch.ones(1, h, n, m)))

    small, large = peak(512), peak(2048)
    assert 3.0 < large / small < 4.6
    assert large < 32 * 2048 * h * (d + m) * 4  # well under one N x D x M tensor (2048 * 2 * 32 * 32 * 4 = 16 MiB)


# --- recurrent decoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MAPS)
def test_recurrent_decoding_reproduces_parallel_token_by_token(name):
    q, k, v = _inputs()
    fm = _fmap(name)
    parallel = linear_attention(q, k, v, causal=True, feature_map=fm, chunk_size=8)
    state = None
    for t in range(q.shape[2]):
        out, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state, feature_map=fm)
        torch.testing.assert_close(out, parallel[:, :, t], rtol=1e-5, atol=1e-6)
    assert state.position == q.shape[2]


@pytest.mark.skipif(not _decode_kernel.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["elu", "cos"])
def test_compiled_decoding_step_equals_the_torch_step(dtype, name):
    # The compiled kernel (no gradient needed) against the torch form step_mapped over 6 steps, on strided inputs
    # (slices of a [B, N, 3, H, d] projection, as a layer makes them); with a gradient the torch form runs.
    g = torch.Generator().manual_seed(12)
    qkv = torch.randn(2, 6, 3, 3, 5, generator=g, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, H, N, d], not contiguous
    fm = _fmap(name)
    state = ref = None
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
    for t in range(6):
        out, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state, feature_map=fm)
        pq, pk = fm.forward_queries(q[:, :, t]), fm.forward_keys(k[:, :, t])
        if ref is None:
            ref = linear_attention_state(2, 3, pq.shape[-1], 5, dtype=dtype)
        expected, ref = step_mapped(pq, pk, v[:, :, t], ref)
        torch.testing.assert_close(out, expected, **tol)
        torch.testing.assert_close(state.s, ref.s, **tol)
        torch.testing.assert_close(state.z, ref.z, **tol)
        assert state.position == ref.position == t + 1
    qg = q[:, :, 0].clone().requires_grad_()
    out, _ = linear_attention_step(qg, k[:, :, 0], v[:, :, 0], state, feature_map=fm)
    assert out.grad_fn is not None  # the torch form, differentiable


def test_state_size_is_constant_in_position_and_steps_are_out_of_place():
    q, k, v = _inputs(n=50)
    state, sizes = None, set()
    for t in range(50):
        previous = state
        kept = None if previous is None else previous.s.clone()
        _, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        sizes.add(state.s.numel() + state.z.numel())
        if previous is not None:
            assert torch.equal(previous.s, kept)  # an old state stays valid (e.g. to branch a decode)
    assert sizes == {2 * 3 * 5 * 7 + 2 * 3 * 5}


@pytest.mark.parametrize("c,m", [(5, 4), (128, 300)])  # read out by multiply-and-reduce, and by bmm (large state)
def test_step_on_mapped_inputs_is_the_rnn_recursion(c, m):
    # S_i = S_{i-1} + phi_k v^T, z_i = z_{i-1} + phi_k, o = phi_q^T S_i / (phi_q^T z_i + eps), written out by hand.
    g = torch.Generator().manual_seed(4)
    pq, pk, v = torch.rand(2, 4, c, generator=g), torch.rand(2, 4, c, generator=g), torch.randn(2, 4, m, generator=g)
    state = linear_attention_state(2, 4, c, m)
    state = state._replace(s=torch.randn(2, 4, c, m, generator=g), z=torch.rand(2, 4, c, generator=g))
    out, new = step_mapped(pq, pk, v, state, eps=0.5)
    s = state.s + pk[..., :, None] * v[..., None, :]
    z = state.z + pk
    torch.testing.assert_close(new.s, s)
    torch.testing.assert_close(new.z, z)
    torch.testing.assert_close(out, torch.einsum("bhc,bhcm->bhm", pq, s) / ((pq * z).sum(-1, keepdim=True) + 0.5))


def test_weights_times_v_equals_attention():
    q, k, v = _inputs(dtype=torch.float64)
    mask = _mask()
    for causal in (False, True):
        for name in ("elu", "efficient"):
            w = linear_attention_weights(q, k, causal=causal, feature_map=name, key_padding_mask=mask)
            out = linear_attention(q, k, v, causal=causal, feature_map=name, key_padding_mask=mask)
            torch.testing.assert_close(w @ v, out, rtol=1e-10, atol=1e-12)
            if causal:
                assert (w.triu(1) == 0).all()


# --- feature maps ---------------------------------------------------------------------------------------------


def test_cos_similarity_in_0_2():
    x, y = torch.randn(500, 16, dtype=torch.float64), torch.randn(500, 16, dtype=torch.float64)
    x[0] = y[0]  # cos = 1
    x[1] = -y[1]  # cos = -1
    fm = CosFeatureMap()
    sim = fm.forward_queries(x) @ fm.forward_keys(y).T
    assert sim.min() >= -1e-12 and sim.max() <= 2 + 1e-12
    torch.testing.assert_close(sim.diagonal()[:2], torch.tensor([2.0, 0.0], dtype=torch.float64))
    cos = torch.nn.functional.cosine_similarity(x[:, None], y[None], dim=-1)
    torch.testing.assert_close(sim, 1 + cos)


def test_elu_map_is_elu_plus_one_and_positive():
    x = torch.linspace(-30, 5, 101, dtype=torch.float64)
    fm = get_feature_map("elu")
    phi = fm.forward_queries(x)
    torch.testing.assert_close(phi, torch.where(x > 0, x + 1, torch.exp(x)))
    assert (phi > 0).all()


def test_favor_estimates_softmax_kernel_and_redraws():
    d = 8
    fm = FavorFeatureMap(d, n_features=8192, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    q, k = 0.5 * torch.randn(4, d, generator=g, dtype=torch.float64), 0.5 * torch.randn(6, d, generator=g,
                                                                                           dtype=torch.float64)
    exact = torch.softmax(q @ k.T / d**0.5, dim=-1)
    est = fm.forward_queries(q) @ fm.forward_keys(k).T
    est = est / est.sum(-1, keepdim=True)
    assert (est - exact).abs().max() < 0.02  # Monte-Carlo error ~ 1/sqrt(8192) of weights ~0.2
    before = fm.omega.clone()
    fm.redraw(torch.Generator().manual_seed(5))
    assert not torch.equal(before, fm.omega)
    # Redrawing from the same seed reproduces the features; the blocks of d rows are orthogonal.
    again = FavorFeatureMap(d, n_features=8192, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(again.omega, fm.omega)
    block = fm.omega[:d] / fm.omega[:d].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(d, dtype=torch.float64))


def test_efficient_attention_rows_sum_to_one_and_causal_uses_no_future_key():
    q, k, _ = _inputs(dtype=torch.float64)
    for causal in (False, True):
        w = linear_attention_weights(q, k, causal=causal, feature_map="efficient")
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w[..., 0]))
        assert (w >= 0).all()
    assert (linear_attention_weights(q, k, causal=True, feature_map="efficient").triu(1) == 0).all()


def test_efficient_attention_stable_for_large_logits():
    q, k, v = _inputs()
    out = linear_attention(q, 80 * k, v, causal=True, feature_map="efficient", chunk_size=8)
    ref = linear_attention(q.double(), 80 * k.double(), v.double(), causal=True, feature_map="efficient",
                           impl="dense")
    assert torch.isfinite(out).all() and _rel(out.double(), ref) < 1e-5


# --- precision ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_accumulate_in_fp32(dtype):
    # 4096 tokens of elu+1 features: fp16 key sums would reach ~4e3 * d and lose the small increments.
    q, k, v = (t.to(dtype) for t in _inputs(b=1, h=2, n=4096, d=16, m=16))
    ref = linear_attention(q.double(), k.double(), v.double(), causal=True)
    out = linear_attention(q, k, v, causal=True)
    assert out.dtype == dtype
    tol = 1e-2 if dtype == torch.float16 else 2e-2  # output rounding only
    assert _rel(out.double(), ref) < tol
    # Gradients flow back in the input dtype, and match the float64 ones to input precision.
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    linear_attention(*leaves, causal=True).float().square().sum().backward()
    ref_leaves = [t.double().requires_grad_() for t in (q, k, v)]
    linear_attention(*ref_leaves, causal=True).square().sum().backward()
    for a, b in zip(leaves, ref_leaves, strict=True):
        assert a.grad.dtype == dtype
        assert _rel(a.grad.double(), b.grad) < 5 * tol


def test_low_precision_decoding_keeps_fp32_state():
    q, k, v = (t.to(torch.bfloat16) for t in _inputs(n=3))
    out, state = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    assert out.dtype == torch.bfloat16 and state.s.dtype == torch.float32 and state.z.dtype == torch.float32


# --- states: prefill in one call, then decode ------------------------------------------------------------------


def _loss_weights(*shapes, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(sh, generator=g, dtype=torch.float64) for sh in shapes]


@pytest.mark.parametrize("name", ["elu", "cos", "favor"])
@pytest.mark.parametrize("impl", ["chunked", "dense", "recurrent"])
def test_prefill_then_decode_equals_the_recurrence_fwd_bwd(name, impl):
    # Prefill N tokens in one call, decode M steps from its state == N + M steps of the recurrence, forward and
    # backward (float64); N = 13 is not a multiple of the chunk, so the tail chunk is padded.
    fm, n, steps = _fmap(name), 13, 4
    q, k, v = _inputs(n=n + steps, dtype=torch.float64)
    (w_out,) = _loss_weights(v.shape)

    def run(prefill):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        qq, kk, vv = leaves
        outs, state, start = [], None, 0
        if prefill:
            out, state = linear_attention(qq[:, :, :n], kk[:, :, :n], vv[:, :, :n], causal=True, feature_map=fm,
                                          impl=impl, chunk_size=4, return_state=True)
            outs.append(out)
            start = n
            assert state.position == n
        for t in range(start, n + steps):
            out, state = linear_attention_step(qq[:, :, t], kk[:, :, t], vv[:, :, t], state, feature_map=fm)
            outs.append(out.unsqueeze(2))
        out = torch.cat(outs, 2)
        (out * w_out).sum().backward()
        return out.detach(), *(t.grad for t in leaves)

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["chunked", "dense", "recurrent"])
def test_initial_state_forms_agree_fwd_bwd_including_the_state(impl):
    # out and the final state (s, z) of every form against the dense reference; gradients reach q, k, v and the
    # initial state, and the loss reads the final state too (a later segment's dependence on it).
    q, k, v = _inputs(dtype=torch.float64)
    fm = _fmap("elu")
    g = torch.Generator().manual_seed(2)
    s0, z0 = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64), torch.rand(2, 3, 5, generator=g,
                                                                                     dtype=torch.float64)
    ws = _loss_weights(v.shape, s0.shape, z0.shape)

    def run(impl):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, s0, z0)]
        out, st = linear_attention(*leaves[:3], causal=True, feature_map=fm, impl=impl, chunk_size=8,
                                   initial_state=(leaves[3], leaves[4]), return_state=True)
        ((out * ws[0]).sum() + (st.s * ws[1]).sum() + (st.z * ws[2]).sum()).backward()
        return out.detach(), st.s.detach(), st.z.detach(), *(t.grad for t in leaves)

    for a, b in zip(run(impl), run("dense"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_split_prefill_equals_one_call_and_gradcheck_with_state():
    q, k, v = _inputs()
    full = linear_attention(q, k, v, causal=True, chunk_size=8)
    first, state = linear_attention(q[:, :, :20], k[:, :, :20], v[:, :, :20], causal=True, chunk_size=8,
                                    return_state=True)
    second, state = linear_attention(q[:, :, 20:], k[:, :, 20:], v[:, :, 20:], causal=True, chunk_size=8,
                                     initial_state=state, return_state=True)
    torch.testing.assert_close(torch.cat([first, second], 2), full)
    assert state.position == 37
    fm = _fmap("elu")
    phi = [fm.forward_queries(t.double()[:1, :2, :9]) for t in (q, k)]
    g = torch.Generator().manual_seed(4)
    leaves = [*phi, v.double()[:1, :2, :9], torch.randn(1, 2, 5, 7, generator=g, dtype=torch.float64),
              torch.rand(1, 2, 5, generator=g, dtype=torch.float64)]
    leaves = [t.clone().requires_grad_() for t in leaves]

    def f(pq, pk, vv, s0, z0):
        out, st = causal_linear_attention_chunked(pq, pk, vv, chunk_size=4, initial_state=(s0, z0), return_state=True)
        return out, st.s, st.z

    assert torch.autograd.gradcheck(f, tuple(leaves))


# --- queries and keys of different lengths (cross attention) ----------------------------------------------------


@pytest.mark.parametrize("impl", ["factorised", "dense"])
def test_noncausal_cross_attention_with_key_padding_fwd_bwd(impl):
    # L = 11 queries over S = 37 keys with padding: equals the explicit masked L x S normalised form computed by
    # hand, forward and backward (float64); garbage in the padded keys changes nothing.
    q = _inputs(n=11, dtype=torch.float64, seed=7)[0]
    _, k, v = _inputs(dtype=torch.float64)
    mask = _mask()
    fm = _fmap("elu")
    (w_out,) = _loss_weights((2, 3, 11, 7))

    def by_hand(q, k, v):
        scores = fm.forward_queries(q) @ fm.forward_keys(k).transpose(-1, -2)  # [B, H, L, S]
        scores = scores.masked_fill(mask[:, None, None, :], 0.0)
        return (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*leaves)
        (out * w_out).sum().backward()
        return out.detach(), *(t.grad for t in leaves)

    got = grads(lambda a, b, c: linear_attention(a, b, c, feature_map=fm, key_padding_mask=mask, impl=impl))
    for a, b in zip(got, grads(by_hand), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[0].shape == (2, 3, 11, 7)
    k2, v2 = k.clone(), v.clone()
    k2[mask[:, None, :, None].expand_as(k2)] = 100.0
    v2[mask[:, None, :, None].expand_as(v2)] = -100.0
    torch.testing.assert_close(linear_attention(q, k2, v2, feature_map=fm, key_padding_mask=mask, impl=impl),
                               got[0])
    w = linear_attention_weights(q, k, feature_map=fm, key_padding_mask=mask)
    assert w.shape == (2, 3, 11, 37)
    torch.testing.assert_close(w @ v, got[0])


def test_efficient_cross_attention_rows_sum_to_one():
    q = _inputs(n=6, seed=3)[0]
    _, k, v = _inputs()
    w = linear_attention_weights(q, k, feature_map="efficient", key_padding_mask=_mask())
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    torch.testing.assert_close(linear_attention(q, k, v, feature_map="efficient", key_padding_mask=_mask()), w @ v)


# --- the un-normalised causal product ---------------------------------------------------------------------------


def test_causal_dot_product_is_fast_transformers_product_fwd_bwd():
    # V'_i = sum_{j<=i} (q_i . k_j) v_j, the dense einsum with a tril mask of fast-transformers' kernel test, and
    # with an initial state S_0: + S_0^T q_i; forward and backward (including into S_0 and from the final S).
    g = torch.Generator().manual_seed(8)
    q, k = (torch.rand(2, 3, 45, 6, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, 45, 4, generator=g, dtype=torch.float64)
    s0 = torch.randn(2, 3, 6, 4, generator=g, dtype=torch.float64)
    ws = _loss_weights(v.shape, s0.shape)

    def by_hand(q, k, v, s0):
        scores = torch.einsum("nhli,nhmi->nhlm", q, k).tril()
        out = torch.einsum("nhlm,nhmj->nhlj", scores, v) + q @ s0
        return out, s0 + k.transpose(-1, -2) @ v

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, s0)]
        out, s = fn(*leaves)
        ((out * ws[0]).sum() + (s * ws[1]).sum()).backward()
        return out.detach(), s.detach(), *(t.grad for t in leaves)

    ref = grads(by_hand)
    for fn in (causal_dot_product, causal_dot_product_dense):
        kw = {"chunk_size": 8} if fn is causal_dot_product else {}
        got = grads(lambda a, b, c, d, fn=fn, kw=kw: fn(a, b, c, initial_state=d, return_state=True, **kw))
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(causal_dot_product(q, k, v), by_hand(q, k, v, torch.zeros_like(s0))[0])
    leaves = tuple(t[:1, :1, :10].clone().requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: causal_dot_product(a, b, c, chunk_size=4), leaves)


# --- packed variable-length batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["chunked", "dense", "recurrent"])
@pytest.mark.parametrize("with_state", [False, True])
def test_packed_sequences_equal_each_sequence_alone_fwd_bwd(impl, with_state):
    # Sequences of lengths 5, 0, 13, 19 packed along N (cu_seqlens) == each one run alone, forward, backward and final
    # states; the state resets at every boundary (or starts from that sequence's own initial state).
    lens = [5, 0, 13, 19]
    cu = torch.tensor([0, 5, 5, 18, 37])
    q, k, v = (t[:1] for t in _inputs(dtype=torch.float64))
    fm = _fmap("elu")
    g = torch.Generator().manual_seed(6)
    s0 = torch.randn(4, 3, 5, 7, generator=g, dtype=torch.float64)
    z0 = torch.rand(4, 3, 5, generator=g, dtype=torch.float64)
    ws = _loss_weights(v.shape, s0.shape, z0.shape)
    kw = {"causal": True, "feature_map": fm, "impl": impl, "chunk_size": 4, "return_state": True}

    def packed(q, k, v, s0, z0):
        out, st = linear_attention(q, k, v, cu_seqlens=cu, initial_state=(s0, z0) if with_state else None, **kw)
        return out, st.s, st.z

    def alone(q, k, v, s0, z0):
        outs, ss, zs, start = [], [], [], 0
        for j, n in enumerate(lens):
            sl = slice(start, start + n)
            if n == 0:  # nothing to run: the final state is the initial one
                ss.append(s0[j:j + 1] if with_state else torch.zeros_like(s0[j:j + 1]))
                zs.append(z0[j:j + 1] if with_state else torch.zeros_like(z0[j:j + 1]))
                continue
            out, st = linear_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl],
                                       initial_state=(s0[j:j + 1], z0[j:j + 1]) if with_state else None, **kw)
            outs.append(out)
            ss.append(st.s)
            zs.append(st.z)
            start += n
        return torch.cat(outs, 2), torch.cat(ss), torch.cat(zs)

    def grads(fn):
        leaves = [t.clone().requires_grad_() for t in (q, k, v, s0, z0)]
        res = fn(*leaves)
        sum((r * w).sum() for r, w in zip(res, ws, strict=True)).backward()
        return *(r.detach() for r in res), *(t.grad for t in leaves[:3])

    for a, b in zip(grads(packed), grads(alone), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_packed_chunked_gradcheck():
    cu = torch.tensor([0, 3, 3, 9, 11])
    g = torch.Generator().manual_seed(9)
    leaves = [torch.rand(1, 2, 11, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    leaves += [torch.randn(1, 2, 11, 2, generator=g, dtype=torch.float64),
               torch.randn(4, 2, 3, 2, generator=g, dtype=torch.float64), torch.rand(4, 2, 3, generator=g,
                                                                                      dtype=torch.float64)]

    def f(pq, pk, vv, s0, z0):
        out, st = causal_linear_attention_chunked(pq, pk, vv, chunk_size=2, initial_state=(s0, z0), return_state=True,
                                                  cu_seqlens=cu)
        return out, st.s, st.z

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in leaves))


@pytest.mark.skipif(not _scan_kernel.usable(torch.zeros(1)), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_init", [False, True])
def test_compiled_chunk_scans_equal_the_torch_loops_bit_for_bit(dtype, reverse, with_init):
    # 3 rows of 9 chunks cut into segments of 2, 0, 4 and 3 chunks (an empty one included), 5 x 2 states per slot:
    # the buffer after the in-place scan (the shifted reads, initial states written in) and the returned totals.
    rows, segments = 3, ((0, 2), (2, 0), (2, 4), (6, 3))
    g = torch.Generator().manual_seed(12)
    buf = torch.randn(rows * 9 + 1, 5, 2, generator=g, dtype=dtype)
    init = torch.randn(4, rows, 5, 2, generator=g, dtype=dtype).transpose(0, 1) if with_init else None  # strided
    twin = causal_mod._scan_suffix_ if reverse else causal_mod._scan_prefix_
    expected_buf = buf.clone()
    expected = twin(expected_buf, rows, segments, init)
    got = _scan_kernel.scan_(buf, rows, segments, init, reverse)
    assert torch.equal(got, expected) and torch.equal(buf, expected_buf)
    # and the totals are the sums they claim to be (init + every term of the segment)
    terms = torch.randn(rows * 9 + 1, 5, 2, generator=g, dtype=torch.float64)
    x = (terms[:-1] if reverse else terms[1:]).view(rows, 9, 5, 2)
    totals = _scan_kernel.scan_(terms.clone(), rows, segments, None, reverse)
    for j, (off, n) in enumerate(segments):
        torch.testing.assert_close(totals[:, j], x[:, off:off + n].sum(1), rtol=1e-12, atol=1e-12)


def test_op_without_the_compiled_scans_gives_the_same_result(monkeypatch):
    # The torch loops (used on CUDA, or without numba) and the compiled scans inside the whole op, packed, with
    # states, forward and backward.
    cu = torch.tensor([0, 3, 3, 9, 11])
    g = torch.Generator().manual_seed(10)
    inputs = [torch.rand(1, 2, 11, 3, generator=g) for _ in range(2)] + [torch.randn(1, 2, 11, 2, generator=g)]
    state = (torch.randn(4, 2, 3, 2, generator=g), torch.rand(4, 2, 3, generator=g))

    def run():
        leaves = [t.clone().requires_grad_() for t in (*inputs, *state)]
        out, st = causal_linear_attention_chunked(*leaves[:3], chunk_size=2, initial_state=tuple(leaves[3:]),
                                                  return_state=True, cu_seqlens=cu)
        (out.sum() + (st.s * 2).sum() - st.z.sum()).backward()
        return out.detach(), st.s, st.z, *(t.grad for t in leaves)

    fast = run()
    monkeypatch.setattr(_scan_kernel, "usable", lambda buf: False)
    for a, b in zip(fast, run(), strict=True):
        assert torch.equal(a, b)


# --- the default path: elu fused into the chunked op, scratch blocks reused --------------------------------------


def test_fused_elu_path_equals_dense_on_strided_padded_inputs_fwd_bwd():
    # q, k, v as a layer makes them (permuted views of one projection), N = 37 not a multiple of the chunk: the fused
    # map writes elu(x) + 1 into its own blocks; equal to the dense reference forward and backward, and gradcheck.
    g = torch.Generator().manual_seed(11)
    qkv = torch.randn(2, 37, 3, 3, 5, generator=g, dtype=torch.float64)  # [B, N, 3, H, d]
    (w_out,) = _loss_weights((2, 3, 37, 5))

    def grads(**kw):
        base = qkv.clone().requires_grad_()
        q, k, v = base.permute(2, 0, 3, 1, 4)  # [B, H, N, d] views, not contiguous
        out = linear_attention(q, k, v, causal=True, chunk_size=8, **kw)
        (out * w_out).sum().backward()
        return out.detach(), base.grad

    for a, b in zip(grads(), grads(impl="dense"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    leaves = tuple(t.clone().requires_grad_() for t in _inputs(b=1, h=2, n=9, d=3, m=2, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: linear_attention(q, k, v, causal=True, chunk_size=4), leaves)


def test_second_backward_through_a_retained_graph_recomputes_the_scratch():
    q, k, v = (t.requires_grad_() for t in _inputs(dtype=torch.float64))
    out = linear_attention(q, k, v, causal=True, chunk_size=8)
    out.backward(torch.ones_like(out), retain_graph=True)
    first = [t.grad.clone() for t in (q, k, v)]
    linear_attention(*(t.detach().requires_grad_() for t in (q, k, v)), causal=True, chunk_size=8).sum().backward()
    for t in (q, k, v):
        t.grad = None
    out.backward(torch.ones_like(out))
    for a, t in zip(first, (q, k, v), strict=True):
        torch.testing.assert_close(t.grad, a, rtol=1e-12, atol=1e-12)


def test_scratch_blocks_are_reused_from_the_second_step_and_freed_by_empty_cache(monkeypatch):
    from kexue.ops.attention import _scratch

    empty_cache()
    misses = []
    take = _scratch.SCRATCH.take

    def counted(shape, like):
        misses.append(not _scratch.SCRATCH.free.get((math.prod(shape), like.dtype)))
        return take(shape, like)

    monkeypatch.setattr(_scratch.SCRATCH, "take", counted)
    q, k, v = (t.requires_grad_() for t in _inputs(n=64))
    for step in range(2):
        misses.clear()
        linear_attention(q, k, v, causal=True, chunk_size=8).sum().backward()
        assert any(misses) if step == 0 else misses and not any(misses)
    held = _scratch.SCRATCH.bytes
    assert held > 0
    with torch.no_grad():  # no backward to wait for: the blocks go back at the end of forward
        linear_attention(q, k, v, causal=True, chunk_size=8)
    assert _scratch.SCRATCH.bytes == held
    empty_cache()
    assert _scratch.SCRATCH.bytes == 0 and not _scratch.SCRATCH.free


# --- bad input ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs()
    with pytest.raises(AttentionInputError, match=r"q \[B, H, L, D\] and k \[B, H, S, D\] must share B, H and D"):
        linear_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="v must be"):
        linear_attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match=r"must be \[B, H, N, D\]"):
        linear_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        linear_attention(q, k, v, key_padding_mask=torch.zeros(2, 36, dtype=torch.bool))
    with pytest.raises(AttentionInputError, match="key_padding_mask must be a bool"):
        linear_attention(q, k, v, key_padding_mask=torch.zeros(2, 37))
    with pytest.raises(ValueError, match="unknown feature_map 'softplus'"):
        linear_attention(q, k, v, feature_map="softplus")
    with pytest.raises(ValueError, match="head sizes must be >= 1"):
        linear_attention(q[..., :0], k[..., :0], v)
    with pytest.raises(ValueError, match="share dtype and device"):
        linear_attention(q, k, v.double())
    with pytest.raises(ValueError, match="eps must be >= 0"):
        linear_attention(q, k, v, eps=-1.0)
    with pytest.raises(ValueError, match="impl='recurrent' is not valid with causal=False"):
        linear_attention(q, k, v, impl="recurrent")
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="pass the same FeatureMap object"):
        linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], feature_map="favor")
    with pytest.raises(ValueError, match="expected q_t, k_t"):
        linear_attention_step(q[:, :, 0], k[:, :, 0, :4], v[:, :, 0])
    with pytest.raises(ValueError, match="must share a dtype"):
        linear_attention_step(q[:, :, 0].half(), k[:, :, 0], v[:, :, 0])
    _, state = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    with pytest.raises(AttentionInputError, match=r"state: expected s \[2, 3, 5, 6\]"):
        linear_attention_step(q[:, :, 1], k[:, :, 1], v[:, :, 1, :6], state)
    with pytest.raises(ValueError, match="needs query_dims"):
        get_feature_map("favor")


def test_bad_inputs_of_states_lengths_and_packing_raise_one_kexue_error():
    q, k, v = _inputs()
    with pytest.raises(KexueError, match=r"q, k, v: causal linear attention needs a sequence of N >= 1 positions"):
        linear_attention(q[:, :, :0], k[:, :, :0], v[:, :, :0], causal=True)
    _, state = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0])
    with pytest.raises(KexueError, match=r"state: expected s \[1, 3, 5, 7\] and z \[1, 3, 5\].*got \[2, 3, 5, 7\]"):
        linear_attention_step(q[:1, :, 1], k[:1, :, 1], v[:1, :, 1], state)
    _, estate = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], feature_map="efficient")
    with pytest.raises(KexueError, match=r"state: expected r \[1, 3, 5, 7\]"):
        linear_attention_step(q[:1, :, 1], k[:1, :, 1], v[:1, :, 1], estate, feature_map="efficient")
    with pytest.raises(KexueError, match=r"causal attention needs as many queries as keys.*L = 36 queries and S = 37"):
        linear_attention(q[:, :, :36], k, v, causal=True)
    with pytest.raises(KexueError, match=r"v must be \[B, H, S, M\]"):
        linear_attention(q, k, v[:, :, :36])
    with pytest.raises(KexueError, match=r"key_padding_mask must have shape \[B, S\] = \(2, 37\)"):
        linear_attention(q[:, :, :5], k, v, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(KexueError, match=r"initial_state.s must have shape \[2, 3, 5, 7\]"):
        linear_attention(q, k, v, causal=True, initial_state=(state.s[:1], state.z[:1]))
    with pytest.raises(KexueError, match="initial_state must be a LinearAttentionState or a pair"):
        linear_attention(q, k, v, causal=True, initial_state=state.s)
    with pytest.raises(KexueError, match="apply to causal=True only"):
        linear_attention(q, k, v, return_state=True)
    with pytest.raises(KexueError, match="not supported with feature_map='efficient'"):
        linear_attention(q, k, v, causal=True, feature_map="efficient", return_state=True)
    with pytest.raises(KexueError, match="batch size must be 1"):
        linear_attention(q, k, v, causal=True, cu_seqlens=torch.tensor([0, 37]))
    for bad in (torch.tensor([0, 20, 10, 37]), torch.tensor([0, 36]), torch.tensor([1, 37]), [0.0, 37.0]):
        with pytest.raises(KexueError, match="cu_seqlens must be non-decreasing integers from 0 to N = 37"):
            linear_attention(q[:1], k[:1], v[:1], causal=True, cu_seqlens=bad)
    with pytest.raises(KexueError, match="cu_seqlens must be a 1-D integer tensor"):
        linear_attention(q[:1], k[:1], v[:1], causal=True, cu_seqlens=torch.tensor([0.0, 37.0]))
    with pytest.raises(KexueError, match=r"either cu_seqlens .* or key_padding_mask"):
        linear_attention(q[:1], k[:1], v[:1], causal=True, cu_seqlens=torch.tensor([0, 37]),
                         key_padding_mask=torch.zeros(1, 37, dtype=torch.bool))
    with pytest.raises(KexueError, match=r"initial_state must have shape \[2, 3, 5, 7\]"):
        causal_dot_product(q.exp(), k.exp(), v, initial_state=torch.zeros(2, 3, 5, 6))
    with pytest.raises(KexueError, match="chunk_size must be a positive int"):
        causal_dot_product(q, k, v, chunk_size=0)


# --- GPU (the same torch ops on CUDA) ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_chunked_matches_cpu_reference(self, dtype):
        q, k, v = _inputs(n=300, d=16, m=24)
        g = torch.randn_like(v)
        ref = _run(q.double(), k.double(), v.double(), g.double(), causal=True, impl="dense")
        got = _run(*(t.cuda().to(dtype) for t in (q, k, v)), g.cuda().to(dtype), causal=True)
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        for a, b in zip(got, ref, strict=True):
            assert _rel(a.double().cpu(), b) < tol

    def test_decoding_matches_cpu(self):
        q, k, v = _inputs(n=6)
        cpu = linear_attention(q, k, v, causal=True)
        state = None
        for t in range(6):
            out, state = linear_attention_step(q[:, :, t].cuda(), k[:, :, t].cuda(), v[:, :, t].cuda(), state)
            torch.testing.assert_close(out.cpu(), cpu[:, :, t], rtol=1e-5, atol=1e-6)

    def test_prefill_state_and_packed_batches_match_cpu(self):
        q, k, v = _inputs(n=40, d=8, m=8)
        cpu_out, cpu_state = linear_attention(q, k, v, causal=True, return_state=True)
        out, state = linear_attention(q.cuda(), k.cuda(), v.cuda(), causal=True, return_state=True)
        torch.testing.assert_close(out.cpu(), cpu_out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state.s.cpu(), cpu_state.s, rtol=1e-5, atol=1e-5)
        cu = torch.tensor([0, 7, 7, 40])
        cpu_packed = linear_attention(q[:1], k[:1], v[:1], causal=True, cu_seqlens=cu)
        packed = linear_attention(q[:1].cuda(), k[:1].cuda(), v[:1].cuda(), causal=True, cu_seqlens=cu.cuda())
        torch.testing.assert_close(packed.cpu(), cpu_packed, rtol=1e-5, atol=1e-6)
