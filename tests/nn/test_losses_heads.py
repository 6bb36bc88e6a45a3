"""Watershed loss, watershed propagation, quantile and linear heads on hand-made batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qact_cli.nn import LinearHead, QAct, QuantileHead, set_context, watershed_loss
from qact_cli.nn.losses import watershed_propagation


def test_watershed_follows_chains_not_the_nearest_seed():
    # A chain 0..7 (steps of 1) grown from seed A at 0, and seed B at 8.6: point 7 is nearer to B
    # (1.6) than to A (7) but joins A's tree through its neighbour 6 (an edge of 1 < 1.6).
    pos = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8.6, 9.5])
    dist = np.abs(pos[:, None] - pos[None, :])
    labels = watershed_propagation(dist, np.array([0, 8]), np.array([0, 1]))
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]


def clusters(n_per: int = 8, k: int = 4, spread: float = 0.1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, 6, generator=g) * 5
    y = torch.arange(k).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), 6, generator=g), y


def test_watershed_loss_small_on_separated_classes_large_on_mixed():
    f, y = clusters()
    sep = watershed_loss(f, y, generator=torch.Generator().manual_seed(0))
    mixed = watershed_loss(f, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))],
                           generator=torch.Generator().manual_seed(0))
    assert sep < 1e-3 and mixed > 0.5


def test_watershed_loss_is_seeded_and_differentiable():
    f, y = clusters(spread=3.0)
    f.requires_grad_(True)
    a = watershed_loss(f, y, generator=torch.Generator().manual_seed(5))
    b = watershed_loss(f, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(3)
    c = watershed_loss(f, y)
    torch.manual_seed(3)
    assert torch.equal(c, watershed_loss(f, y))
    a.backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_watershed_loss_by_hand():
    # Two classes, two points each, every point its own class's nearest: with one seed per class
    # everything propagates correctly; d(own) = 1, d(other) = 5 for every sample.
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0], [1.0, 5.0]])
    y = torch.tensor([0, 0, 1, 1])
    loss = watershed_loss(f, y, generator=torch.Generator().manual_seed(0))
    expected = -math.log(math.exp(-1.0) / (math.exp(-1.0) + math.exp(-5.0)))
    assert abs(float(loss) - expected) < 1e-4


def test_watershed_loss_absent_classes_and_degenerate_batches():
    f, y = clusters(k=2)
    assert torch.isfinite(watershed_loss(f, y * 7))  # labels {0, 7}: classes 1..6 are absent
    one = torch.randn(1, 6, requires_grad=True)
    loss = watershed_loss(one, torch.tensor([3]))
    loss.backward()
    assert float(loss) == 0.0 and one.grad is not None
    same = watershed_loss(torch.randn(5, 6), torch.zeros(5, dtype=torch.long))
    assert abs(float(same)) < 1e-6  # one class: softmax over a single logit
    dup = torch.zeros(4, 6, requires_grad=True)
    watershed_loss(dup, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(dup.grad).all()


def test_quantile_head_returns_log_probabilities_and_its_loss():
    torch.manual_seed(0)
    head = QuantileHead(6, 4)
    out = head(torch.randn(32, 6))
    assert out.shape == (32, 4)
    assert torch.allclose(out.logsumexp(1), torch.zeros(32), atol=1e-5)
    assert torch.allclose(F.softmax(out, 1), out.exp(), atol=1e-6)
    y = torch.randint(0, 4, (32,))
    p = out.exp()
    onehot = F.one_hot(y, 4).float()
    by_hand = -(0.9 * onehot * torch.log(p) + 0.1 * (1 - onehot) * torch.log(1 - p)).sum(1).mean()
    assert torch.allclose(head.loss(out, y), by_hand, atol=1e-5)


def test_quantile_head_trains_and_evaluates_with_either_context():
    f, y = clusters(n_per=16, k=3, spread=1.0)
    head = QuantileHead(6, 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = head.loss(head(f), y)
        first = float(loss) if first is None else first
        loss.backward()
        opt.step()
    assert float(loss) < first
    head.eval()
    with torch.no_grad():
        assert (head(f).argmax(1) == y).float().mean() > 0.9
        set_context(head, "stored")
        assert isinstance(head.quantile, QAct) and head.quantile.context == "stored"
        assert (head(f[:1]).argmax(1) == y[:1]).all()


def test_linear_head_is_cross_entropy():
    head = LinearHead(5, 3)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    assert torch.allclose(head.loss(head(x), y), F.cross_entropy(head.fc(x), y))


def test_heads_registry_names_variants_and_refusals():
    from qact_cli.nn.heads import HEADS, LinearHead, QuantileHead, make_head, split_head
    from qact_cli.registry import UnknownName

    assert HEADS.names() == ["linear", "quantile"]
    assert isinstance(make_head("linear", 8, 3), LinearHead)
    legacy, fitted = make_head("quantile", 8, 3), make_head("quantile:direct_fit", 8, 3)
    assert isinstance(legacy, QuantileHead) and legacy.variant == "odds"  # checkpoints before variants
    assert fitted.variant == "direct_fit"
    assert split_head("quantile:scaled") == ("quantile", "scaled")
    for bad, hint in (("quantil", "did you mean 'quantile'"), ("quantile:nope", "variant 'nope'"),
                      ("linear:odds", "linear head variant")):
        with pytest.raises(UnknownName, match=hint):
            make_head(bad, 8, 3)
