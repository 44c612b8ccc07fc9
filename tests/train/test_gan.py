"""The shared GAN step: a trained critic estimates W1, the generator follows it, and the runtime's guarantees
(NaN skip, resume, 2-process gloo) hold for two networks and two optimisers."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from kexue.losses.gan import (
    clip_weights_,
    gradient_penalty,
    spectral_normalize,
    wgan_critic_loss,
    wgan_generator_loss,
)
from kexue.models.gan import MLPCritic
from kexue.train.checkpoint import load_tensors
from kexue.train.ema import EMA
from kexue.train.gan import GANStep
from kexue.train.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")


class Shift(nn.Module):
    """G(z) = z + b: the generator of N(b, 1) from z ~ N(0, 1)."""

    def __init__(self, b: float = 0.0) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor([b]))

    def forward(self, z):
        return z + self.b


def wgan_gp_step(G, D, mu, *, g_lr=0.0, n_critic=1, batch=256, penalty="gp"):
    def critic_loss(real, fake, z):
        pen = gradient_penalty(D, real, fake) if penalty == "gp" else torch.zeros(())
        w = -wgan_critic_loss(D(real), D(fake))
        return -w + 10 * pen, {"w_estimate": w.item()}

    return GANStep(
        generator=G, critic=D,
        g_optimizer=torch.optim.Adam(G.parameters(), lr=g_lr, betas=(0.5, 0.9)) if g_lr else None,
        d_optimizer=torch.optim.Adam(D.parameters(), lr=3e-3, betas=(0.5, 0.9)),
        critic_loss=critic_loss, generator_loss=lambda fake, z: (wgan_generator_loss(D(fake)), {}),
        sample_real=lambda: torch.randn(batch, 1) + mu, sample_z=lambda n: torch.randn(n, 1), n_critic=n_critic)


def flat_critic(**kwargs):
    # Start from f = 0. In 1-D a GP critic whose random init slopes the wrong way must pass through slope 0 to turn,
    # where the penalty (|f'| - 1)^2 is largest: it stays stuck for hundreds of steps. From f = 0 it turns at once.
    D = MLPCritic(in_dim=1, width=32, depth=2, **kwargs)
    nn.init.zeros_(D.net[-1].weight)
    return D


def _estimate(step, D, mu, n=20000):
    with torch.no_grad():
        return (D(torch.randn(n, 1) + mu).mean() - D(step.generator(torch.randn(n, 1))).mean()).item()


@pytest.mark.parametrize("mu", [1.0, -1.5])
def test_gp_critic_estimates_w1_between_shifted_gaussians(mu, tmp_path):
    # W1(N(0,1), N(mu,1)) = |mu|. With the soft penalty the optimal slope is 1 + |mu| / (2 lambda), a few % high.
    torch.manual_seed(0)
    D = flat_critic()
    step = wgan_gp_step(Shift(), D, mu)
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers())
    for _ in range(150):
        logs = step(rt)
        rt.end_step()
    assert "generator_loss" not in logs  # critic-only: the generator is not trained
    assert abs(_estimate(step, D, mu) - abs(mu)) <= 0.1 * abs(mu)


def test_spectral_norm_critic_underestimates_w1(tmp_path):
    torch.manual_seed(0)
    D = spectral_normalize(MLPCritic(in_dim=1, width=32, depth=2))  # no penalty, so no barrier; W / 0 would be NaN
    step = wgan_gp_step(Shift(), D, 1.5, penalty="none")
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers())
    for _ in range(150):
        step(rt)
        rt.end_step()
    est = _estimate(step, D, 1.5)
    assert 0.3 < est <= 1.5 * 1.02  # 1-Lipschitz by construction, so never above W1 (up to sampling error)


def test_generator_follows_the_critic_and_its_ema_lags(tmp_path):
    torch.manual_seed(0)
    G, D = Shift(0.0), flat_critic()
    step = wgan_gp_step(G, D, 1.0, g_lr=2e-2, n_critic=3, batch=128)
    step.ema = EMA(G, 0.9)
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers(), ema=step.ema)
    for _ in range(40):
        logs = step(rt)
        rt.end_step()
    assert 0.5 < G.b.item() < 1.2, G.b.item()  # moved from 0 toward the data's mean 1
    assert {"critic_loss", "w_estimate", "generator_loss"} <= logs.keys()
    assert 0 < step.ema.averaged()["b"].item() < G.b.item()  # the average trails a parameter that keeps rising


def test_a_nan_step_is_skipped_and_counted(tmp_path):
    torch.manual_seed(0)
    G, D = Shift(), MLPCritic(in_dim=1, width=8, depth=1)
    step = wgan_gp_step(G, D, 1.0, g_lr=1e-2)
    base = step.critic_loss
    step.critic_loss = lambda real, fake, z: ((base(real, fake, z)[0] * (float("nan") if rt.step == 2 else 1.0)),
                                              {})
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers())
    rt.resume()
    skipped = []
    while rt.step < 5:
        before = G.b.item()
        logs = step(rt)
        skipped.append(logs.get("skipped", 0))
        if logs.get("skipped"):
            assert G.b.item() == before and all(p.grad is None for p in step.modules().parameters())
        rt.end_step()
    assert skipped == [0, 0, 1, 0, 0] and rt.bad_steps == 1


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    def train(directory, stop):
        torch.manual_seed(0)
        G, D = Shift(), MLPCritic(in_dim=1, width=16, depth=2)
        step = wgan_gp_step(G, D, 1.0, g_lr=1e-2, n_critic=2, batch=32)
        step.ema = EMA(G, 0.5)
        rt = Runtime(None, directory=directory, model=step.modules(), optimizer=step.optimizers(), ema=step.ema,
                     every=3)
        rt.resume()  # restores weights, both optimisers, the EMA and the RNG that draws batches and z
        while rt.step < stop:
            step(rt)
            rt.end_step()
        return {k: v.clone() for k, v in step.modules().state_dict().items()}, step.ema.averaged()

    full, full_ema = train(tmp_path / "a", 6)
    train(tmp_path / "b", 4)  # "killed" after step 4; the checkpoint at 3 is the newest
    resumed, resumed_ema = train(tmp_path / "b", 6)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert torch.equal(full_ema["b"], resumed_ema["b"])


def test_after_critic_step_runs_after_every_critic_update(tmp_path):
    # Weight clipping through the hook: every critic update is followed by the clamp, so the generator always
    # trains against a clipped critic, and the EMA is updated once per generator update.
    torch.manual_seed(0)
    G, D = Shift(), MLPCritic(in_dim=1, width=8, depth=1)
    step = wgan_gp_step(G, D, 1.0, g_lr=1e-2, n_critic=3, batch=16, penalty="none")
    seen = []

    def clip():
        clip_weights_(D, 0.01)
        seen.append(max(p.abs().max().item() for p in D.parameters()))

    base = step.generator_loss

    def generator_loss(fake, z):
        seen.append(max(p.abs().max().item() for p in D.parameters()))  # the critic the generator sees
        return base(fake, z)

    step.after_critic_step, step.generator_loss = clip, generator_loss
    step.ema = EMA(G, 0.5)
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers(), ema=step.ema)
    for _ in range(2):
        step(rt)
        rt.end_step()
    assert len(seen) == 2 * (3 + 1) and max(seen) <= 0.01
    assert step.ema.num_updates == 2


def test_bad_n_critic():
    with pytest.raises(Exception, match="n_critic must be a positive int"):
        wgan_gp_step(Shift(), MLPCritic(in_dim=1), 1.0, n_critic=0)


SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    from kexue.losses.gan import gradient_power_penalty, wgan_critic_loss, wgan_generator_loss
    from kexue.models.gan import MLPCritic, MLPGenerator
    from kexue.train import distributed
    from kexue.train.checkpoint import save_tensors
    from kexue.train.gan import GANStep
    from kexue.train.runtime import Runtime

    out = Path(sys.argv[1])
    info = distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    G, D = MLPGenerator(z_dim=2, width=16, depth=2).double(), MLPCritic(width=16, depth=2).double()
    torch.manual_seed(1000 + info.rank)  # ranks draw different numbers from here on ...
    distributed.broadcast_parameters(G, info)  # ... but start from rank 0's weights
    distributed.broadcast_parameters(D, info)
    share = slice(info.rank * 32 // info.world_size, (info.rank + 1) * 32 // info.world_size)

    def batch(kind):  # the global batch of this step and update, split across ranks
        gen = torch.Generator().manual_seed({"real": 0, "z": 1}[kind] * 10**6 + rt.step * 100 + counter[kind])
        counter[kind] += 1
        return torch.randn(32, 2, generator=gen, dtype=torch.float64)[share]

    counter = {"real": 0, "z": 0}
    step = GANStep(generator=G, critic=D, g_optimizer=torch.optim.Adam(G.parameters(), 1e-3),
                   d_optimizer=torch.optim.Adam(D.parameters(), 1e-3),
                   critic_loss=lambda r, f, z: (wgan_critic_loss(D(r), D(f)) + gradient_power_penalty(D, r, k=1,
                                                p=2), {}),
                   generator_loss=lambda f, z: (wgan_generator_loss(D(f)), {}),
                   sample_real=lambda: batch("real") * 2 + 1, sample_z=lambda n: batch("z"), n_critic=2, dist=info)
    rt = Runtime(None, directory=out / "ckpt", model=step.modules(), optimizer=step.optimizers(), dist=info)
    init = {"init." + k: v.clone() for k, v in step.modules().state_dict().items()}
    while rt.step < 5:
        step(rt)
        rt.end_step()
    if info.is_main:
        save_tensors(out / f"final-{info.world_size}.safetensors", {**step.modules().state_dict(), **init})
    distributed.shutdown(info)
''')


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, out[-5000:]


def test_two_process_gan_step_matches_one_process(tmp_path):
    # Gradients averaged by hand across 2 gloo ranks (each with half of the global batch) = 1 rank with all of it.
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
    _run([sys.executable, str(script), str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
          str(tmp_path / "two")], tmp_path)
    one, _ = load_tensors(tmp_path / "one" / "final-1.safetensors")
    two, _ = load_tensors(tmp_path / "two" / "final-2.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-9, atol=1e-11)
    for k in ("generator.net.0.weight", "critic.net.0.weight"):
        assert not torch.allclose(one[k], one["init." + k])  # both networks trained
