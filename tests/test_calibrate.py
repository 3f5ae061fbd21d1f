"""latencyBudgetMs (`coda_lsp.calibrate`): the choice from injected device costs, and the real measurement path."""

from __future__ import annotations

import json
from dataclasses import replace

from coda_lsp.calibrate import BLOCKS, CONTEXTS, STEPS, Costs, apply, calibrated, choose, main, measure_costs
from coda_lsp.options import ServerOptions
from coda_lsp.service import CompletionService

FAST = Costs(refresh_base_s=0.002, refresh_per_token_s=0.0002, step_s=0.004)       # a small model
SLOW = Costs(refresh_base_s=0.15, refresh_per_token_s=0.02, step_s=0.25)           # 1.7B on a laptop CPU


def test_a_slower_device_gets_smaller_settings_for_the_same_budget():
    fast = choose(300, FAST, hole=48, context_cost_per_token_s=1e-6)
    slow = choose(300, SLOW, hole=48, context_cost_per_token_s=1e-4)
    assert fast.fits and fast.steps == max(STEPS) and fast.context_tokens == max(CONTEXTS)
    assert (slow.steps, slow.context_tokens) < (fast.steps, fast.context_tokens) or slow.block_length > fast.block_length
    assert slow.predicted_ms > 0


def test_a_larger_budget_never_picks_smaller_settings():
    picks = [choose(b, SLOW, hole=48) for b in (500, 1000, 2000, 4000, 8000)]
    order = [(STEPS.index(c.steps), CONTEXTS.index(c.context_tokens), BLOCKS.index(c.block_length)) for c in picks]
    assert order == sorted(order, reverse=True)
    assert not picks[0].fits and picks[-1].fits


def test_an_impossible_budget_takes_the_smallest_settings_and_says_so():
    c = choose(1, SLOW, hole=48)
    assert not c.fits and (c.steps, c.context_tokens, c.block_length) == (min(STEPS), min(CONTEXTS), max(BLOCKS))


def test_no_budget_keeps_todays_settings(tiny_model_dir):
    options = ServerOptions()
    assert calibrated(None, options) == (options, None, None)
    chosen = apply(options, choose(100, FAST, hole=48))
    assert chosen.decode.cache == options.decode.cache and chosen.max_tokens == options.max_tokens


async def test_the_server_measures_and_applies_a_budget_at_load(tiny_model_dir):
    opts = ServerOptions(model_path=str(tiny_model_dir), device="cpu", dtype="float32", threads=1,
                         latency_budget_ms=1_000_000)
    svc = CompletionService(opts)
    await svc.load()
    try:
        assert svc.ready, svc.message
        o = svc.options   # a budget nothing exceeds: the largest settings
        assert (o.context_tokens, o.decode.steps, o.decode.block_length) == (max(CONTEXTS), max(STEPS), min(BLOCKS))
        costs = measure_costs(svc.model.engine, context=64, repeats=1)
        assert costs.step_s > 0 and costs.refresh(64) >= costs.refresh(16) > 0
    finally:
        svc.shutdown()


def test_calibrate_command_prints_costs_and_choices(tiny_model_dir, capsys):
    assert main("calibrate", ["--model", str(tiny_model_dir), "--dtype", "float32", "--threads", "1",
                              "--latency-budget-ms", "500"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["costs"]) == {"refresh_base_s", "refresh_per_token_s", "step_s"} and "500" in out["choices"]
