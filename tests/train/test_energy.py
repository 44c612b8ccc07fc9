"""MEG's step (kexue.train.energy): the generator follows the energy into the data's pit, the MI network trains
with the generator's optimiser, and bad configurations are refused."""

import pytest
import torch
from torch import nn

from kexue.models.energy import MLPEncoder, MLPStatistics
from kexue.models.gan import MLPCritic
from kexue.train.energy import meg_step
from kexue.train.runtime import Runtime


class Shift(nn.Module):
    """G(z) = z + b: the generator of N(b, 1) from z ~ N(0, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        return z + self.b


@pytest.mark.parametrize("estimator", ["jsd", "infogan"])
def test_meg_step_moves_the_generator_to_the_data(estimator, tmp_path):
    torch.manual_seed(0)
    G, U = Shift(), MLPCritic(1, width=32, depth=2)
    mi_net = MLPStatistics(1, 1, width=16, depth=1) if estimator == "jsd" else MLPEncoder(1, 1, width=16, depth=1)
    before = [p.detach().clone() for p in mi_net.parameters()]
    step = meg_step(G, U, mi_net, estimator=estimator, sample_real=lambda: torch.randn(128, 1) + 2.0,
                    sample_z=lambda n: torch.randn(n, 1), lam=0.1, n_critic=2, lr=1e-2)
    assert set(step.modules()) == {"generator", "critic", "mi_net"}
    rt = Runtime(None, directory=tmp_path, model=step.modules(), optimizer=step.optimizers())
    for _ in range(200):
        logs = step(rt)
        rt.end_step()
    assert G.b.item() == pytest.approx(2.0, abs=0.3)
    assert {"critic_loss", "score_penalty", "generator_loss", "mi"} <= set(logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, mi_net.parameters(), strict=True))  # trained with G


def test_ablation_and_bad_configurations():
    G, U = Shift(), MLPCritic(1, width=8, depth=1)
    kwargs = {"sample_real": lambda: torch.randn(8, 1), "sample_z": lambda n: torch.randn(n, 1)}
    step = meg_step(G, U, None, mi_weight=0.0, **kwargs)
    assert "mi_net" not in step.modules()
    with pytest.raises(ValueError, match="MI network"):
        meg_step(G, U, None, mi_weight=1.0, **kwargs)
    with pytest.raises(ValueError, match="estimator"):
        meg_step(G, U, MLPStatistics(1, 1, width=4, depth=1), estimator="mine", **kwargs)
    with pytest.raises(ValueError, match="mi_weight"):
        meg_step(G, U, None, mi_weight=-1.0, **kwargs)
