"""Runtime: resume after a kill reproduces the uninterrupted run; NaN steps are skipped or rolled back; keep-last-N."""

import json
import math
import random
from dataclasses import asdict, dataclass

import pytest
import torch
from torch import nn

from kexue.errors import KexueError
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.rundir import start_run
from kexue.train.checkpoint import list_checkpoints, load_checkpoint, load_tensors, save_checkpoint
from kexue.train.ema import EMA
from kexue.train.runtime import Runtime
from kexue.train.seed import seed_everything


@dataclass
class Cfg(ExperimentConfig):
    steps: int = param(20, "steps", min=1)
    lr: float = param(0.05, "learning rate", min=0)


class Killed(Exception):
    pass


def train(run, cfg: Cfg, *, kill_at: int | None = None, nan_at: set[int] | None = None, every: int = 4,
          keep_last: int = 3, max_bad_steps: int = 3, nan_from: int | None = None):
    """A tiny trainer written the way the runtime's docstring asks: data chosen by the step."""
    seed_everything(cfg.seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))  # dropout: global RNG
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.05 * s))
    ema = EMA(model, 0.8)
    rt = Runtime(run, config=asdict(cfg), model=model, optimizer=opt, scheduler=sched, ema=ema, every=every,
                 keep_last=keep_last, max_bad_steps=max_bad_steps)
    rt.resume()
    while rt.step < cfg.steps:
        if rt.step == kill_at:
            raise Killed
        gen = torch.Generator().manual_seed(1000 + rt.step)
        x = torch.randn(8, 3, generator=gen)
        loss = (model(x) - x.prod(1, keepdim=True)).pow(2).mean()
        if nan_at and rt.step in nan_at:
            nan_at.discard(rt.step)  # injected once; a rollback replays this step cleanly
            loss = loss * float("nan")
        if nan_from is not None and rt.step >= nan_from:  # a loss that stays NaN, however often it is replayed
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        if rt.check(loss):
            opt.step()
            sched.step()
            ema.update(model)
        rt.end_step(loss=loss)
    rt.save()
    return model, ema, rt


def losses(run) -> dict[int, float]:
    lines = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if "loss" in r}


def test_resume_after_a_kill_matches_the_uninterrupted_run(tmp_path):
    cfg = Cfg()
    full_run = start_run(tmp_path / "a", "t", cfg, {}, [])
    model_a, ema_a, _ = train(full_run, cfg)

    run_b = start_run(tmp_path / "b", "t", cfg, {}, [])
    with pytest.raises(Killed):
        train(run_b, cfg, kill_at=11)  # last checkpoint at step 8; steps 9..11 are logged, then lost
    assert [s for s, _ in list_checkpoints(run_b.checkpoints)] == [0, 4, 8]
    model_b, ema_b, rt = train(run_b, cfg)
    assert rt.resumed_from == 8
    for p, q in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    for k, v in ema_a.averaged().items():
        assert torch.equal(v, ema_b.averaged()[k])
    assert losses(run_b) == losses(full_run) and len(losses(full_run)) == cfg.steps
    dropped = (run_b.path / "metrics.dropped.jsonl").read_text()
    assert '"step": 9' in dropped and '"step": 11' in dropped


def test_an_injected_nan_is_skipped_and_the_run_completes(tmp_path):
    cfg = Cfg(steps=12)
    run = start_run(tmp_path, "t", cfg, {}, [])
    model, _, rt = train(run, cfg, nan_at={5})
    assert rt.bad_steps == 1 and rt.rollbacks == 0 and rt.step == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    events = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "nan_skip"] == [5]


def test_consecutive_bad_steps_roll_back_with_a_lower_learning_rate(tmp_path):
    cfg = Cfg(steps=16)
    run = start_run(tmp_path, "t", cfg, {}, [])
    model, _, rt = train(run, cfg, nan_at={9, 10, 11}, max_bad_steps=3)
    assert rt.rollbacks == 1 and rt.bad_steps == 3 and rt.lr_scale == 0.5 and rt.step == 16
    events = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    rollback = [e for e in events if e.get("event") == "rollback"]
    assert len(rollback) == 1 and rollback[0]["to_step"] == 8 and rollback[0]["from_step"] == 11
    assert rt.optimizer.param_groups[0]["initial_lr"] == pytest.approx(cfg.lr * 0.5)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the replayed steps' first records moved out of the log, as on resume: one finite loss per step
    logged = [e for e in events if "loss" in e]
    assert [e["step"] for e in logged] == list(range(1, 17)) and "nan" not in {e["loss"] for e in logged}
    dropped = [json.loads(s) for s in (run.path / "metrics.dropped.jsonl").read_text().splitlines()]
    assert {e["step"] for e in dropped} == {9, 10, 11} and any(e["loss"] == "nan" for e in dropped if "loss" in e)


def test_a_loss_that_stays_nan_stops_after_max_rollbacks(tmp_path):
    """It rolled back forever before, and metrics.jsonl grew without bound."""
    cfg = Cfg(steps=40, max_rollbacks=2)
    run = start_run(tmp_path, "t", cfg, {}, [])
    with pytest.raises(KexueError, match=r"at step 14 after 2 rollback\(s\) \(max_rollbacks=2\); last finite loss "
                                         r"[0-9.e-]+ at step 9\. Lower the learning rate") as err:
        train(run, cfg, nan_from=10, every=4, max_bad_steps=3)
    assert "\n" not in str(err.value)
    events = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [e["from_step"] for e in events if e.get("event") == "rollback"] == [12, 14]
    assert len(events) < 40


def test_keep_last_n(tmp_path):
    cfg = Cfg(steps=20)
    run = start_run(tmp_path, "t", cfg, {}, [])
    train(run, cfg, every=4, keep_last=2)
    assert [s for s, _ in list_checkpoints(run.checkpoints)] == [16, 20]
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".tmp")]


def test_bad_checkpoints_are_clear_errors_and_nothing_is_overwritten(tmp_path):
    cfg = Cfg(steps=4)
    run = start_run(tmp_path, "t", cfg, {}, [])
    train(run, cfg, every=2)
    latest = list_checkpoints(run.checkpoints)[-1][1]
    with pytest.raises(KexueError, match=r"different config \(lr: 0.05 -> 0.1\)"):
        load_checkpoint(latest, asdict(Cfg(steps=4, lr=0.1)))
    with pytest.raises(KexueError, match="already exists"):
        save_checkpoint(run.checkpoints, 4, {"x": torch.zeros(1)}, {})
    tensors = latest / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])  # truncated
    with pytest.raises(KexueError, match="corrupt or truncated"):
        train(run, cfg)
    state = list_checkpoints(run.checkpoints)[-2][1] / "state.json"
    state.write_text(state.read_text()[:50])  # truncated
    with pytest.raises(KexueError, match=r"state\.json is corrupt or truncated"):
        load_checkpoint(state.parent)
    with pytest.raises(KexueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(KexueError, match="is a file; expected a checkpoint folder"):
        load_checkpoint(tensors)  # exists, but is not a checkpoint folder
    with pytest.raises(KexueError, match=r"is a folder; expected a \.safetensors file"):
        load_tensors(latest)


def test_checkpoints_hold_no_pickle_and_restore_the_state_exactly(tmp_path):
    """Non-tensor state is JSON beside safetensors; tuples, int keys, None, bools and floats come back as they were."""
    state = {"opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}},
                     "param_groups": [{"params": [0], "betas": (0.9, 0.999), "lr": 0.1 / 3, "foreach": None,
                                       "amsgrad": False}]},
             "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
             "odd": {"__tuple__": 1, (1, "a"): float("inf"), "nan": float("nan")}}
    path = save_checkpoint(tmp_path, 7, {"w": torch.ones(2)}, state)
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "state.safetensors", "tensors.safetensors"]
    json.loads((path / "state.json").read_text())  # plain JSON (no pickle anywhere)
    _, loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["rng"]["python"] == random.getstate()
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    group = loaded["opt"]["param_groups"][0]
    assert group == state["opt"]["param_groups"][0] and isinstance(group["betas"], tuple)
    assert torch.equal(loaded["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert loaded["odd"]["__tuple__"] == 1 and loaded["odd"][(1, "a")] == float("inf")
    assert math.isnan(loaded["odd"]["nan"])


def test_legacy_state_pt_checkpoints_still_load(tmp_path):
    """Checkpoints written before state.json keep a state.pt, read with weights_only=True."""
    path = save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, {"counters": {"bad_steps": 1}})
    _, state = load_checkpoint(path)
    torch.save(state, path / "state.pt")
    (path / "state.json").unlink()
    (path / "state.safetensors").unlink()
    assert load_checkpoint(path)[1] == {"step": 2, "counters": {"bad_steps": 1}}
    (path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(KexueError, match=r"state\.pt is corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_seed_everything_refuses_what_numpy_would_reduce_or_reject(seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32\)"):
        seed_everything(seed)


# --- the step iterator ------------------------------------------------------------------------------------------------


def train_steps(run, cfg: Cfg, *, kill_at: int | None = None, nan_at: set[int] | None = None, every: int = 4,
                log_every: int = 3, emas: dict[str, EMA] | None = None):
    """The same trainer through ``rt.steps``: the loss averaged over log intervals of ``log_every`` steps."""
    seed_everything(cfg.seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    emas = emas if emas is not None else {"fast": EMA(model, 0.5), "slow": EMA(model, 0.9)}
    rt = Runtime(run, config=asdict(cfg), model=model, optimizer=opt, ema=emas, every=every, max_bad_steps=2)
    rt.resume()
    for step in rt.steps(cfg.steps, desc="test", log_every=log_every):
        if step.index == kill_at:
            raise Killed
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1000 + step.index))
        loss = (model(x) - x.prod(1, keepdim=True)).pow(2).mean()
        if nan_at and step.index in nan_at:
            nan_at.discard(step.index)
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        if rt.check(loss):
            opt.step()
            for ema in emas.values():
                ema.update(model)
        step.mean(loss=loss)
        if step.logging:
            step.log(first=step.index)
    return model, emas, rt


def test_steps_log_interval_means_that_a_resume_reproduces(tmp_path):
    cfg = Cfg(steps=14)
    full_run = start_run(tmp_path / "a", "t", cfg, {}, [])
    _, emas_a, _ = train_steps(full_run, cfg)
    rows = [json.loads(s) for s in (full_run.path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [3, 6, 9, 12, 14] and [r["first"] for r in logged] == [2, 5, 8, 11, 13]

    # killed mid-interval (last checkpoint at step 8, inside the interval 7..9): the means come back with it
    run_b = start_run(tmp_path / "b", "t", cfg, {}, [])
    with pytest.raises(Killed):
        train_steps(run_b, cfg, kill_at=10)
    _, emas_b, rt = train_steps(run_b, cfg)
    assert rt.resumed_from == 8 and losses(run_b) == losses(full_run)
    for name, ema in emas_a.items():
        for k, v in ema.averaged().items():
            assert torch.equal(v, emas_b[name].averaged()[k])


def test_a_step_undone_by_a_rollback_reports_nothing(tmp_path):
    cfg = Cfg(steps=12)
    run = start_run(tmp_path, "t", cfg, {}, [])
    _, _, rt = train_steps(run, cfg, nan_at={4, 5}, log_every=2)  # the second bad step rolls back to step 4
    assert rt.rollbacks == 1 and rt.step == 12
    logged = [json.loads(s) for s in (run.path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if "loss" in r]
    # one finite row per interval; the NaN step's value is left out of its interval's mean, the undone step's too
    assert [r["step"] for r in logged] == [2, 4, 6, 8, 10, 12] and all(math.isfinite(r["loss"]) for r in logged)


def test_several_emas_are_checkpointed_under_their_names_and_one_under_ema(tmp_path):
    cfg = Cfg(steps=4)
    run = start_run(tmp_path / "a", "t", cfg, {}, [])
    _, _, rt = train_steps(run, cfg)
    keys = set(load_checkpoint(rt.latest())[0])
    assert any(k.startswith("ema.fast.") for k in keys) and any(k.startswith("ema.slow.") for k in keys)
    single = start_run(tmp_path / "b", "t", cfg, {}, [])
    model, _, rt = train(single, cfg)
    keys = set(load_checkpoint(rt.latest())[0])
    assert {k for k in keys if k.startswith("ema.")} == {f"ema.{k}" for k in EMA(model, 0.8).state_dict()}
