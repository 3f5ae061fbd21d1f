"""`latencyBudgetMs`: measure this device's refresh and step costs once, then pick the decode settings
(context tokens, steps, block length) whose *warm* request fits the budget.

Why: a 1.7B model on a laptop CPU and the shipped default model on a workstation differ by 100x per
forward; fixed defaults are either slow on one or wasteful on the other. The cost model follows the
engine (`coda_model.engine`, `coda_model.context_reuse`): a warm request (one keystroke after the
previous one) recomputes the changed span plus the first block's window, then each later block a
vicinity refresh of the decided block and the new window, and every other step one cached window step:

    warm = refresh(block + 2) + (blocks - 1) * refresh(2 * block + 2 * vicinity + 1) + (steps - blocks) * step

`refresh(n)` (a forward over n tokens against the cached context) is fitted as a + b * n from two
measured sizes; `step` is a measured cached step. Tests inject `Costs`; `measure_costs` times the model.
With no budget set, nothing here runs and today's settings apply.

    coda-lsp calibrate [--model DIR] [--latency-budget-ms 300]    # prints the costs and the choice
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

from coda_lsp.cli_options import add_setting_flags, options_from
from coda_lsp.options import ServerOptions

CONTEXTS = (1024, 768, 512, 384, 256, 128)   # context tokens tried, most first
STEPS = (16, 12, 8, 6, 4)                    # denoise steps tried, most first
BLOCKS = (8, 16, 32)                         # block lengths tried (longer = fewer refreshes, less accurate)


@dataclass(frozen=True)
class Costs:
    """Seconds on this device: refresh(n) = refresh_base_s + refresh_per_token_s * n; one cached step."""
    refresh_base_s: float
    refresh_per_token_s: float
    step_s: float

    def refresh(self, tokens: int) -> float:
        return self.refresh_base_s + self.refresh_per_token_s * tokens


@dataclass(frozen=True)
class Choice:
    context_tokens: int
    steps: int
    block_length: int
    predicted_ms: float
    fits: bool           # False: even the smallest settings exceed the budget (they are chosen anyway)


def warm_seconds(costs: Costs, steps: int, block: int, hole: int, vicinity: int) -> float:
    """Predicted model time of a warm request (see the module docstring)."""
    blocks = min(steps, max(1, -(-hole // block)))
    return (costs.refresh(block + 2) + (blocks - 1) * costs.refresh(2 * block + 2 * vicinity + 1)
            + max(0, steps - blocks) * costs.step_s)


def choose(budget_ms: float, costs: Costs, hole: int, vicinity: int = 8,
           context_cost_per_token_s: float = 0.0) -> Choice:
    """The first of (steps desc, context desc, block asc) whose warm request fits `budget_ms`.

    Steps go last (fewer steps cost quality fastest, spec notes section 6); a longer context costs
    `context_cost_per_token_s` per step (attention over it), usually small next to the weights."""
    best = None
    for steps in STEPS:
        for context in CONTEXTS:
            for block in BLOCKS:
                per_step = context_cost_per_token_s * context * steps
                ms = 1000 * (warm_seconds(costs, steps, block, hole, vicinity) + per_step)
                candidate = Choice(context, steps, block, round(ms, 1), ms <= budget_ms)
                if candidate.fits:
                    return candidate
                best = candidate
    assert best is not None
    return best


def apply(options: ServerOptions, choice: Choice) -> ServerOptions:
    """The options with the chosen context, steps and block length (nothing else changes)."""
    return replace(options, context_tokens=choice.context_tokens,
                   decode=replace(options.decode, steps=choice.steps, block_length=choice.block_length))


def measure_costs(engine, context: int = 256, repeats: int = 2) -> Costs:
    """Time the loaded model: forwards of 16 and 64 tokens against `context` cached tokens, and a window step."""
    import torch
    from coda_model.kernels import best_seconds
    model, dev = engine.model, engine.device
    vocab = min(engine.config.vocab_size, 1000)
    ids = torch.randint(0, vocab, (1, context + 64), device=dev)

    def best(fn) -> float:
        return best_seconds(fn, repeats)

    with torch.no_grad():
        past = model(ids[:, :context], use_cache=True, logits_index=torch.tensor([0], device=dev)).key_values

        def span(n: int):
            pos = torch.arange(context, context + n, device=dev)[None]
            return lambda: model(ids[:, context:context + n], position_ids=pos, past_key_values=past,
                                 logits_index=torch.arange(min(n, 9), device=dev))
        t16, t64 = best(span(16)), best(span(64))
        step = best(span(9))
    per_token = max(0.0, (t64 - t16) / 48)
    return Costs(refresh_base_s=max(0.0, t16 - 16 * per_token), refresh_per_token_s=per_token, step_s=step)


def calibrated(engine, options: ServerOptions) -> tuple[ServerOptions, Optional[Costs], Optional[Choice]]:
    """Options for this device: unchanged without a budget; else measured and chosen (runs on the worker)."""
    if not options.latency_budget_ms:
        return options, None, None
    costs = measure_costs(engine)
    choice = choose(options.latency_budget_ms, costs, hole=options.max_tokens,
                    vicinity=options.decode.vicinity or 0)
    return apply(options, choice), costs, choice


def main(name: str, argv: Sequence[str]) -> int:
    """`coda-lsp calibrate`: print the measured costs and what a budget would choose."""
    p = argparse.ArgumentParser(prog=f"coda-lsp {name}", description="Measure this device's refresh and step "
                                "costs and print the settings a latency budget picks.")
    add_setting_flags(p)
    args = p.parse_args(argv)
    options = options_from(args, p)
    from coda_lsp.loading import ModelUnavailable, load_engine
    try:
        lm = load_engine(options, remeasure=True)   # the kernel table is measured again, and cached
    except (ModelUnavailable, Exception) as exc:   # ModelLoadError and friends carry their own fix
        print(f"coda-lsp {name}: model not loaded: {exc}", file=sys.stderr)
        return 2
    costs = measure_costs(lm.engine)
    out: dict = {"model": str(lm.path), "device": lm.device, "dtype": lm.dtype, "kernel": lm.kernel_report(),
                 "costs": asdict(costs)}
    budgets = [options.latency_budget_ms] if options.latency_budget_ms else [150, 300, 1000, 3000]
    out["choices"] = {str(b): asdict(choose(b, costs, hole=options.max_tokens, vicinity=options.decode.vicinity or 0))
                      for b in budgets}
    print(json.dumps(out, indent=2))
    return 0
