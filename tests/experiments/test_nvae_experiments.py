"""The NVAE experiments' presets: the flat VAE matches NVAE's size and budget; the independent-pixel yardstick."""

import math

import pytest
import torch

from kexue.experiments import nvae_colour, nvae_mnist, vae_flat_mnist
from kexue.experiments.registry import get
from kexue.experiments.runner import resolve_config
from kexue.models.nvae import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_flat_vae_matches_the_nvae_parameter_count_and_budget(preset):
    nvae_cfg = resolve_config(get("nvae-mnist"), preset)
    flat_cfg = resolve_config(get("vae-flat-mnist"), preset)
    assert vae_flat_mnist.NVAE_PARAMETERS[preset] == count_parameters(nvae_mnist.build(nvae_cfg))
    assert flat_cfg.target_parameters == vae_flat_mnist.NVAE_PARAMETERS[preset]
    for key in ("epochs", "batch_size", "lr", "lr_min", "warmup_epochs", "kl_anneal_portion", "spectral_coeff",
                "iw_samples", "iw_test_images", "elbo_test_images"):
        assert getattr(flat_cfg, key) == getattr(nvae_cfg, key), key
    if preset == "quick":  # building the 33M-parameter flat candidates takes a while; the search is the same
        flat = vae_flat_mnist._build(flat_cfg, vae_flat_mnist.matched_channels(flat_cfg))
        assert flat.num_groups == 1
        assert flat.top_shape[1:] == nvae_mnist.build(nvae_cfg).top_shape[1:]  # NVAE's coarsest resolution
        assert abs(count_parameters(flat) / flat_cfg.target_parameters - 1) < 0.15


def test_independent_pixel_yardstick():
    levels = 16
    train = torch.arange(levels).repeat(10).float().div(levels - 1).view(-1, 1, 1, 1)  # every value equally often
    bpd = nvae_colour.independent_pixels_bpd(train, train[:levels], num_bits=4)
    assert bpd == pytest.approx(4.0)  # uniform over 16 values: 4 bits
    constant = torch.zeros(100, 1, 2, 2)
    bpd = nvae_colour.independent_pixels_bpd(constant, constant, num_bits=4)
    assert bpd == pytest.approx(-math.log2(101 / 116))  # add-one smoothing over 16 values
