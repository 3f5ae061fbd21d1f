"""Text around a hole -> the token ids the engine gets, within a token budget (one definition, shared by
the language server's `InfillJob` and the HTTP server).

The context builder cuts text with a character estimate of tokens; when the real tokenizer counts more,
the far ends go first: the extra context's start, then the prefix's start and the suffix's end, half each
(a side that needs less leaves the rest to the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HoleIds:
    prompt: list[int]     # extra context + prefix, the ids before the hole
    suffix: list[int]     # the ids after the hole
    truncated: bool       # something was cut to fit the budget


def encode_hole(tokenizer: Any, extra: str, prefix: str, suffix: str, budget: int) -> HoleIds:
    """Tokenize and trim the far ends so extra + prefix + suffix is at most `budget` tokens."""
    extra_ids = tokenizer.encode(extra) if extra else []
    pre, suf = tokenizer.encode(prefix), tokenizer.encode(suffix)
    total = len(extra_ids) + len(pre) + len(suf)
    over = total - budget
    if over > 0:
        cut = min(over, len(extra_ids))
        extra_ids = extra_ids[cut:]
        over -= cut
        keep_pre = max(0, len(pre) - (over + 1) // 2 - max(0, (over + 1) // 2 - len(suf)))
        pre = pre[len(pre) - keep_pre:]
        over = len(extra_ids) + len(pre) + len(suf) - budget
        if over > 0:
            suf = suf[: max(0, len(suf) - over)]
    return HoleIds(extra_ids + pre, suf, len(extra_ids) + len(pre) + len(suf) < total)
