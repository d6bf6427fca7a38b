"""Stochastic weight averaging: the running mean of the weights seen at each update."""
from __future__ import annotations

import pytest
import torch

from lisentry.training.loop import WeightAverage


def _net(seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GRU(4, 2, batch_first=True))
    net.register_buffer("steps", torch.tensor(seed))    # an integer buffer: not averaged
    return net


def test_average_is_the_mean_of_the_updates():
    nets = [_net(s) for s in (1, 2, 3)]
    wa = WeightAverage()
    with pytest.raises(ValueError):
        wa.state_dict()
    for n in nets:
        wa.update(n)
    avg = wa.state_dict()
    assert wa.n == 3
    for k, v in nets[0].state_dict().items():
        if v.is_floating_point():
            expect = torch.stack([n.state_dict()[k] for n in nets]).mean(0)
            assert torch.allclose(avg[k], expect, atol=1e-6), k
    assert int(avg["steps"]) == 3          # integer state follows the last update
    # the average loads into the model, and updating the model later does not change it
    target = _net(9)
    target.load_state_dict(avg)
    before = {k: v.clone() for k, v in avg.items()}
    with torch.no_grad():
        nets[2][0].weight.add_(1.0)
    assert all(torch.equal(before[k], wa.state_dict()[k]) for k in before)
