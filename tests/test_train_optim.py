"""Optimizers and schedules: our Adafactor equals transformers' (the paper's), LR schedule shapes."""

from __future__ import annotations

import math

import pytest
import torch

from coda_train.adafactor import Adafactor
from coda_train.config import OptimConfig
from coda_train.optim import lr_lambda

transformers = pytest.importorskip("transformers")


def test_adafactor_matches_transformers_adafactor_as_coda_configured_it():
    torch.manual_seed(0)
    shapes = [(16, 8), (8,), (3, 5, 4)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt_a = Adafactor(ours, lr=1e-2, weight_decay=0.01)
    opt_b = transformers.optimization.Adafactor(ref, lr=1e-2, relative_step=False, scale_parameter=False,
                                                warmup_init=False, weight_decay=0.01)
    for step in range(5):
        grads = [torch.randn(s) * (step + 1) for s in shapes]
        for p, q, g in zip(ours, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for p, q in zip(ours, ref):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


def test_adafactor_keeps_bf16_parameters_in_bf16():
    p = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.bfloat16))
    p.grad = torch.randn(4, 4, dtype=torch.bfloat16)
    before = p.detach().clone()
    Adafactor([p], lr=0.1).step()
    assert p.dtype == torch.bfloat16 and not torch.equal(p, before)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_decay_to_the_floor(schedule):
    cfg = OptimConfig(schedule=schedule, warmup_steps=10, min_lr_ratio=0.1)
    f = lr_lambda(cfg, 100)
    assert f(0) == 0.0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    if schedule == "constant":
        assert f(99) == 1.0
    else:
        assert f(100) == pytest.approx(0.1)
        assert f(55) == pytest.approx(0.55 if schedule == "linear" else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_ratio_is_used_when_no_warmup_steps():
    f = lr_lambda(OptimConfig(schedule="cosine", warmup_ratio=0.1), 200)
    assert f(10) == pytest.approx(0.5) and f(20) == pytest.approx(1.0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_equal_the_transformers_ones_coda_used(schedule):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    make = get_linear_schedule_with_warmup if schedule == "linear" else get_cosine_schedule_with_warmup
    ref = make(opt, num_warmup_steps=7, num_training_steps=50)
    ours = lr_lambda(OptimConfig(schedule=schedule, warmup_steps=7), 50)
    for step in range(50):
        assert ours(step) == pytest.approx(ref.lr_lambdas[0](step), abs=1e-12)
