"""kexue.train.vae: the NVAE step under the runtime (resume reproduces the curve, NaN steps are survived)."""

import pytest
import torch

from kexue.losses.vae import adamax, warmup_cosine_schedule
from kexue.models.nvae import NVAE, NVAEConfig
from kexue.train.runtime import Runtime
from kexue.train.vae import NVAEStep

STEPS = 8
CFG = dict(image_size=8, padding=0, enc_channels=4, dec_channels=4, num_preprocess_blocks=1,
           num_postprocess_blocks=1, num_preprocess_cells=1, num_postprocess_cells=1, num_latent_scales=2,
           groups_per_scale=2, latent_channels=2, enc_cells_per_group=1, dec_cells_per_group=1)
DATA = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


def build(directory, every=4, **step_kw):
    torch.manual_seed(0)
    model = NVAE(NVAEConfig(**CFG))
    opt = adamax(model.parameters(), lr=1e-2)
    sched = warmup_cosine_schedule(opt, STEPS, 2, 1e-4)

    def batch(step: int) -> torch.Tensor:
        idx = torch.arange(8) + 8 * (step % 8)
        return torch.bernoulli(DATA[idx])  # dynamic binarisation from the global RNG, which checkpoints carry

    step = NVAEStep(model, opt, sched, batch=batch, total_steps=STEPS, **step_kw)
    rt = Runtime(config={"test": 1}, model=step.modules(), optimizer=opt, scheduler=sched, every=every,
                 directory=directory)
    return step, rt


def train(step, rt, until=STEPS):
    losses = {}
    while rt.step < until:
        logs = step(rt)
        losses[rt.step + 1] = logs["loss"]
        rt.end_step(**logs)
    return losses


def test_resume_reproduces_the_uninterrupted_loss_curve(tmp_path):
    step, rt = build(tmp_path / "a")
    rt.resume()
    full = train(step, rt)
    assert step.spectral is not None and int(step.spectral.calls) == STEPS

    step, rt = build(tmp_path / "b")
    rt.resume()
    first = train(step, rt, until=6)  # killed after step 6; the last checkpoint is at step 4
    step, rt = build(tmp_path / "b")  # a fresh process
    assert rt.resume() and rt.step == 4
    rest = train(step, rt)
    assert {s: first[s] for s in range(1, 5)} == {s: full[s] for s in range(1, 5)}
    assert rest == {s: full[s] for s in range(5, STEPS + 1)}  # bit for bit, including power-iteration state


def test_an_injected_nan_is_skipped_and_the_run_completes(tmp_path):
    step, rt = build(tmp_path)
    rt.resume()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 5 else output  # the 5th forward pass goes bad

    handle = step.model.post_process.register_forward_hook(poison)
    losses = train(step, rt)
    handle.remove()
    assert rt.step == STEPS and rt.bad_steps == 1 and rt.rollbacks == 0
    assert torch.isnan(torch.tensor(losses[5])) and all(torch.isfinite(torch.tensor(v)) for s, v in losses.items()
                                                        if s != 5)
    assert all(torch.isfinite(p).all() for p in step.model.parameters())


def test_repeated_nans_roll_back_to_the_last_checkpoint_and_the_run_completes(tmp_path):
    step, rt = build(tmp_path, every=2)
    rt.resume()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if 5 <= calls["n"] <= 7 else output  # three bad steps in a row

    step.model.post_process.register_forward_hook(poison)
    train(step, rt)
    assert rt.step == STEPS and rt.bad_steps == 3 and rt.rollbacks == 1 and rt.lr_scale == 0.5
    assert all(torch.isfinite(p).all() for p in step.model.parameters())


def test_balancing_is_applied_only_during_the_warmup(tmp_path):
    step, rt = build(tmp_path, kl_anneal_portion=0.3)
    rt.resume()
    seen = []
    while rt.step < STEPS:
        logs = step(rt)
        seen.append((logs["beta"], step.last.gamma.clone()))
        rt.end_step(**logs)
    assert any(beta < 1 for beta, _ in seen) and any(beta == 1 for beta, _ in seen)
    for beta, gamma in seen:
        assert gamma.mean().item() == pytest.approx(1.0)
        assert (gamma == 1).all() == (beta >= 1)


def test_amp_options(tmp_path):
    with pytest.raises(ValueError, match="amp must be one of"):
        build(tmp_path, amp="fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        build(tmp_path, amp="fp16")
    step, rt = build(tmp_path, amp="bf16")  # CPU autocast in bfloat16: runs, losses finite
    rt.resume()
    losses = train(step, rt, until=2)
    step.model.set_checkpointing(True)  # and with BN-Swish recomputation under autocast
    losses.update(train(step, rt, until=3))
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
