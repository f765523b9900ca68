"""Tasks: the sort protocol's shapes and sizes, and the toy's exact expectations."""

from __future__ import annotations

import itertools

import pytest
import torch

from gradbench import ops
from gradbench.registry import get_task_class

SortTask = get_task_class("sort")
ToyTask = get_task_class("toy")


def test_sort_paper_preset_is_the_published_protocol():
    cfg = SortTask.make_config(None, "paper")
    assert (cfg.length, cfg.batch_size, cfg.lr, cfg.train_size, cfg.test_size) == (10, 1024, 1e-4, 2_000_000, 400_000)
    task = SortTask(SortTask.make_config({"train_size": 10, "test_size": 10}, "paper"))
    # Linear(10,128)-Tanh-Linear(128,128)-Tanh-Linear(128,256)-Tanh -> sign -> Linear(256,100): 76,644 parameters.
    assert sum(p.numel() for p in task.parameters()) == 76_644
    node = task.node
    assert (node.kind, node.shape, node.params["margin"]) == ("sign", (256,), 0.5)


def test_sort_batch_and_cost_accept_sample_dims():
    torch.manual_seed(0)
    task = SortTask(SortTask.make_config({"batch_size": 7, "test_size": 50}, "quick"))
    logits, cost_fn = task.train_batch()
    assert logits.shape == (7, 256)
    assert logits.abs().max() <= 1  # Tanh before the sign node, as in the paper
    y = ops.hard(task.node, logits.detach())
    c = cost_fn(y)
    assert c.shape == (7,) and (c > 0).all()
    stacked = cost_fn(torch.stack([y, y, y]))
    assert stacked.shape == (3, 7)
    torch.testing.assert_close(stacked[1], c)


def test_sort_cost_is_summed_cross_entropy_against_argsort():
    task = SortTask(SortTask.make_config({"length": 3, "test_size": 10}, "quick"))
    code = torch.zeros(1, 256)
    with torch.no_grad():
        task.decoder.weight.zero_()
        task.decoder.bias.copy_(torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]).flatten())
    target = torch.tensor([[0, 1, 2]])
    expected = 3 * -torch.log_softmax(torch.tensor([5.0, 0, 0]), 0)[0]
    torch.testing.assert_close(task.cost(code, target), expected.view(1))


def test_sort_test_set_is_fixed_across_seeds_and_eval_is_deterministic():
    cfg = SortTask.make_config({"test_size": 200, "node": "bernoulli"}, "quick")
    torch.manual_seed(1)
    a = SortTask(cfg)
    torch.manual_seed(2)
    b = SortTask(cfg)
    assert torch.equal(a.test_x, b.test_x)
    assert a.evaluate() == a.evaluate()  # a stochastic node is evaluated with a fixed generator
    assert set(a.evaluate()) == set(SortTask.metrics)


def test_sort_fixed_train_set_draws_from_it():
    torch.manual_seed(3)
    task = SortTask(SortTask.make_config({"train_size": 5, "batch_size": 64, "test_size": 10}, "quick"))
    assert task.train_x.shape == (5, 5)
    logits, _ = task.train_batch()
    assert torch.unique(logits, dim=0).shape[0] <= 5


@pytest.mark.parametrize("target", [0.45, 0.499, 0.7])
def test_toy_bernoulli_expected_cost_and_gradient_are_exact(target):
    task = ToyTask(ToyTask.make_config({"dim": 3, "target": target}))
    with torch.no_grad():
        task.phi.copy_(torch.tensor([0.3, -1.2, 2.0]))
    p = torch.sigmoid(task.phi.detach())
    enumerated = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        b = torch.tensor(bits)
        enumerated += float(torch.prod(torch.where(b == 1, p, 1 - p)) * task.cost(b))
    assert task.expected_cost().item() == pytest.approx(enumerated, rel=1e-5)
    task.expected_cost().backward()
    torch.testing.assert_close(task.phi.grad, (1 - 2 * target) * p * (1 - p))  # REFERENCES.md
    assert task.optimum() == pytest.approx(3 * min(target, 1 - target) ** 2)


def test_toy_categorical_expected_cost_matches_enumeration_and_optimum():
    task = ToyTask(ToyTask.make_config({"variant": "categorical", "dim": 2, "classes": 3}))
    with torch.no_grad():
        task.phi.copy_(torch.tensor([[0.5, -0.2, 0.1], [1.0, 0.0, -1.0]]))
    p = torch.softmax(task.phi.detach(), -1)
    enumerated = 0.0
    for i, j in itertools.product(range(3), repeat=2):
        y = torch.nn.functional.one_hot(torch.tensor([i, j]), 3).float()
        enumerated += float(p[0, i] * p[1, j] * task.cost(y))
    assert task.expected_cost().item() == pytest.approx(enumerated, rel=1e-5)
    best = min(float(task.cost(torch.nn.functional.one_hot(torch.tensor([c, c]), 3).float())) for c in range(3))
    assert task.optimum() == pytest.approx(best, rel=1e-6)
    metrics = task.evaluate()
    assert metrics["gap"] == pytest.approx(enumerated - best, rel=1e-4) and metrics["gap"] > 0
