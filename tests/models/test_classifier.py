"""The feature CNN: shapes, the feature/logit relation, and batch independence in eval mode (metrics rely on it)."""

import pytest
import torch

from kexue.models.classifier import FeatureCNN


def test_shapes_and_feature_head_relation():
    net = FeatureCNN(widths=(4, 8), feature_dim=12).eval()
    x = torch.rand(5, 1, 28, 28)
    feats = net.features(x)
    logits = net(x)
    assert feats.shape == (5, 12) and logits.shape == (5, 10)
    assert net.num_features == 12
    assert (feats >= 0).all()  # post-ReLU features
    # In eval mode dropout is the identity, so the logits are exactly the head applied to the features.
    torch.testing.assert_close(logits, net.head(feats))


def test_eval_mode_is_batch_independent():
    """A sample's features must not depend on the rest of its batch (batch norm uses running statistics)."""
    torch.manual_seed(1)
    net = FeatureCNN(widths=(4, 8, 8), feature_dim=16)
    net.train()
    for _ in range(3):  # move the running statistics away from their initial values
        net(torch.rand(16, 1, 28, 28))
    net.eval()
    x = torch.rand(6, 1, 28, 28)
    together = net.features(x)
    alone = torch.cat([net.features(x[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_gradients_reach_every_parameter():
    net = FeatureCNN(widths=(4, 8), feature_dim=8, in_channels=3, num_classes=5, image_size=16)
    loss = torch.nn.functional.cross_entropy(net(torch.rand(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"feature_dim": 0}, {"widths": ()},
                                    {"image_size": 4, "widths": (4, 4, 4)}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FeatureCNN(**kwargs)
