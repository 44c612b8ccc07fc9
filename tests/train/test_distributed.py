"""A 2-process gloo DDP run (torchrun, spawned here) matches a 1-process run with the same global batch.

The trainer below is written once and run both ways; the NaN guard's decision is shared across ranks (a NaN on
rank 1 only makes both ranks skip), and only rank 0 writes checkpoints.
"""

import json
import textwrap

import torch

from kexue.train.checkpoint import list_checkpoints, load_tensors

SCRIPT = textwrap.dedent('''
    import faulthandler, json, sys
    faulthandler.enable(all_threads=True)  # a rank that aborts (seen once: a gloo teardown race) shows where it was
    from pathlib import Path
    import torch
    from torch import nn
    from kexue.train import distributed
    from kexue.train.checkpoint import save_tensors
    from kexue.train.ema import EMA
    from kexue.train.runtime import Runtime
    from kexue.train.seed import seed_everything

    out = Path(sys.argv[1])
    info = distributed.init_from_env("cpu")
    seed_everything(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1)).double()
    ema = EMA(model, 0.9)
    net = distributed.wrap(model, info)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    rt = Runtime(None, directory=out / "ckpt", model=net, optimizer=opt, ema=ema, every=3, dist=info)
    rt.resume()
    while rt.step < 8:
        gen = torch.Generator().manual_seed(rt.step)
        x = torch.randn(16, 4, generator=gen, dtype=torch.float64)  # the global batch
        y = x.sin().sum(1, keepdim=True)
        share = slice(info.rank * 16 // info.world_size, (info.rank + 1) * 16 // info.world_size)
        loss = (net(x[share]) - y[share]).pow(2).mean()
        if rt.step == 3 and info.rank == info.world_size - 1:
            loss = loss * float("nan")  # only the last rank sees it
        opt.zero_grad()
        loss.backward()
        if rt.check(loss):
            opt.step()
            ema.update(net)
        rt.end_step()
    if info.is_main:
        save_tensors(out / f"final-{info.world_size}.safetensors", {**model.state_dict(),
                     **{"ema." + k: v for k, v in ema.averaged().items()}})
        (out / f"counters-{info.world_size}.json").write_text(json.dumps({"bad": rt.bad_steps}))
    distributed.shutdown(info)
''')


def test_two_process_gloo_ddp_matches_one_process(tmp_path, launcher):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    launcher.run(script, tmp_path / "one")
    launcher.run(script, tmp_path / "two", nproc=2)
    one, _ = load_tensors(tmp_path / "one" / "final-1.safetensors")
    two, _ = load_tensors(tmp_path / "two" / "final-2.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-10, atol=1e-12)
    assert not torch.equal(one["0.weight"], two["ema.0.weight"])  # the EMA is not the raw model
    for n in (1, 2):
        assert json.loads((tmp_path / ("one" if n == 1 else "two") / f"counters-{n}.json").read_text()) == {"bad": 1}
    assert [s for s, _ in list_checkpoints(tmp_path / "two" / "ckpt")] == [0, 3, 6]


def test_under_torchrun_only_rank_0_prints_the_run_s_lines(tmp_path, launcher):
    out = launcher.run("-m", "kexue.cli", "--quiet", "run", "init-geometry", "--set", "pairs=300", "dims=3", "--out",
                       tmp_path / "runs", nproc=2)
    assert out.count("init-geometry: done in") == 1 and out.count("report: ") == 1, out[-3000:]
    assert len(list((tmp_path / "runs").iterdir())) == 1
