"""Where completions come from. The evaluator only knows the small `Sampler` protocol; the real one
wraps `coda_model.engine.Engine`, the others feed reference or empty answers (oracle checks).

Infilling hole budget: the hole is `ceil(1.5 * T) + 8` tokens, T = the canonical middle's token
count, rounded up to a multiple of 8. The model ends early by writing eos/pad (the engine's
`hole_text` stops there), so the budget only has to be large enough; tying it to the reference
length keeps the comparison fair across the three infilling sets without revealing the exact size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from coda_model.decode_config import FIELD_NAMES, DecodeConfig

from coda_train.eval.datasets import Task
from coda_train.eval.prompts import build_prompt, oracle_generation


@dataclass
class DecodeSettings:
    """Decoding for evaluation: the paper's decode (`DecodeConfig.paper()`, coda-spec §6.1: entropy, T=0.1,
    top-p 0.9, 768 steps) plus what generation needs: 768 new tokens, prompts cut to their last 1024 tokens."""

    decode: DecodeConfig = field(default_factory=DecodeConfig.paper)
    max_new_tokens: int = 768         # generation length (tokens); steps beyond it are clamped (one per token)
    max_prompt_tokens: int = 1024     # keep the last N prompt tokens (as the paper's harness)
    use_chat: bool = True             # paper's chat-template prompts; False for plain completion

    @property
    def seed(self) -> int:
        return self.decode.seed or 0

    def with_values(self, raw: dict[str, Any]) -> "DecodeSettings":
        """A copy with settings given by name (DecodeConfig fields or this class's), as strings or values."""
        out = self
        for name, value in raw.items():
            if name in FIELD_NAMES:
                out = replace(out, decode=out.decode.with_field(name, value))
            elif name in ("max_new_tokens", "max_prompt_tokens"):
                out = replace(out, **{name: int(value)})
            elif name == "use_chat":
                out = replace(out, use_chat=value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes"))
            else:
                raise ValueError(f"unknown decode setting {name!r} (known: {', '.join((*FIELD_NAMES, *_OWN))})")
        return out

    def to_dict(self) -> dict:
        """Flat, as run identities and reports have always stored it."""
        return {**asdict(self.decode), **{k: getattr(self, k) for k in _OWN}}


_OWN = ("max_new_tokens", "max_prompt_tokens", "use_chat")


def hole_budget(canonical_tokens: int) -> int:
    """Tokens given to an infilling hole (see module docstring)."""
    raw = math.ceil(1.5 * canonical_tokens) + 8
    return 8 * math.ceil(raw / 8)


class Sampler(Protocol):
    """Produces completions. `generate` is batched (one string per prompt, the text after it);
    `infill` returns `n` candidate middles for one hole."""

    name: str

    def count_tokens(self, text: str) -> int: ...

    def generate(self, prompts: Sequence[str], *, settings: DecodeSettings, seed: int) -> list[str]: ...

    def infill(self, prefix: str, suffix: str, *, length: int, n: int, settings: DecodeSettings,
               seed: int) -> list[str]: ...


class OracleSampler:
    """Answers every prompt with its task's reference solution (formatted as a model would write it);
    `empty=True` answers with nothing. Used to check the whole pipeline: expect 100% and 0%."""

    def __init__(self, tasks: Sequence[Task], *, empty: bool = False, use_chat: bool = True):
        self.name = "empty" if empty else "oracle"
        self.empty = empty
        self._by_prompt = {}
        self._by_hole = {}
        for t in tasks:
            if t.style == "infill":
                self._by_hole[(t.prompt, t.suffix)] = t.canonical
            else:
                self._by_prompt[build_prompt(t, use_chat=use_chat)] = oracle_generation(t, use_chat=use_chat)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def generate(self, prompts, *, settings, seed):
        return ["" if self.empty else self._by_prompt[p] for p in prompts]

    def infill(self, prefix, suffix, *, length, n, settings, seed):
        return ["" if self.empty else self._by_hole[(prefix, suffix)]] * n


class ModelLoadFailed(RuntimeError):
    """The model directory could not be loaded; message says why and what to do."""


class EngineSampler:
    """A CoDA model through `coda_model.engine.Engine` (`generate` batched, `infill` with candidates)."""

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "auto"):
        from coda_model.checkpoint import load_model
        from coda_model.errors import ModelLoadError

        try:
            self.loaded = load_model(model_dir, device=device, dtype=dtype)
        except ModelLoadError as exc:
            raise ModelLoadFailed(f"cannot load model {model_dir}: {exc}") from None
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadFailed(f"cannot load model {model_dir}: {type(exc).__name__}: {exc} "
                                  "(expected a CoDA directory: config.json, *.safetensors, tokenizer files)") from None
        try:
            from coda_model.engine import Engine
        except ImportError as exc:
            raise ModelLoadFailed(f"coda_model.engine is not available ({exc}); update the checkout") from None
        self.engine = Engine(self.loaded)
        self.tokenizer = self.loaded.tokenizer
        self.name = str(model_dir)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    @staticmethod
    def _config(settings: DecodeSettings, *, steps: int, seed: int) -> DecodeConfig:
        return replace(settings.decode, steps=max(1, steps), seed=seed)

    def generate(self, prompts, *, settings, seed):
        ids = [self.tokenizer.encode(p)[-settings.max_prompt_tokens:] for p in prompts]
        out = self.engine.generate(ids, max_new_tokens=settings.max_new_tokens,
                                   config=self._config(settings, steps=settings.decode.steps, seed=seed))
        # keep special tokens so post-processing can cut at <|im_end|> like the paper's harness
        return [self.tokenizer.decode(list(o), skip_special_tokens=False) for o in out]

    def infill(self, prefix, suffix, *, length, n, settings, seed):
        config = self._config(settings, steps=min(settings.decode.steps, length), seed=seed)
        state = None
        for state in self.engine.infill(self.tokenizer.encode(prefix), self.tokenizer.encode(suffix),
                                        length=length, config=config, num_candidates=n):
            pass
        if state is None:
            return [""] * n
        return [self.engine.hole_text(state, c) for c in range(n)]
