"""The diffusion infilling engine: token ids in, a stream of denoise states out.

    from coda_model.checkpoint import load_model
    from coda_model.engine import DecodeConfig, Engine
    loaded = load_model("model/default_model")
    engine = Engine(loaded)
    tok = loaded.tokenizer
    for state in engine.infill(tok.encode("def add(a, b):\\n    "), tok.encode("\\n"), length=16,
                               config=DecodeConfig(steps=16, threshold=0.9, block_length=16, cache="dual")):
        print(state.step, engine.hole_text(state, partial=True))   # stop iterating at any time to cancel

Works on token ids only (tokenization is the caller's); `hole_text` is the one place that decodes.
The sequence is `prefix ‖ [MASK] × length ‖ suffix`; each step runs the network, takes the (shifted)
logits at the hole and reveals some masked positions with the sampler (`coda_model.sampler`).

Documented behaviour for edge cases (each tested):
- empty prefix *and* suffix: allowed, the hole is generated unconditionally (the first hole
  position is predicted from its own output, CoDA's shift convention at position 0);
- `length == 0`: one state, already done, with empty tensors (`hole_text` -> "");
- `length > max_context`: ValueError. Context that does not fit beside the hole is truncated:
  the prefix loses tokens at its start, the suffix at its end; each side gets half of the room,
  and a side that needs less leaves the rest to the other (`fit_context`);
- `steps > length` (or > a block's size): clamped, a step never has less than one position to fill;
- unknown `alg` / `cache`, bad numbers: ValueError from `DecodeConfig`, one line saying what to use;
- token ids outside the vocabulary: ValueError.

Cancellation: `infill` returns a generator; every step runs under `torch.no_grad()` that is *not*
held across `yield`, all per-request buffers (tokens, caches, RNG) live in the generator's frame,
and yielded states are copies. Dropping the iterator at any point leaves nothing behind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from coda_model.cache import make_cache
from coda_model.context_reuse import ContextSlot, SequenceKV, plan_reuse
from coda_model.decode_config import DecodeConfig
from coda_model.sampler import denoise_step


@dataclass
class DenoiseState:
    """The hole after one step. Tensors are copies owned by the caller."""

    tokens: torch.Tensor      # [C, length] hole ids (mask id where still masked), C = num_candidates
    masked: torch.Tensor      # [C, length] bool
    confidence: torch.Tensor  # [C, length] float: p(token) when it was revealed, 0 where masked
    step: int                 # forwards run so far
    steps: int                # planned maximum (the hole may finish earlier with a threshold)
    done: bool


def plan_blocks(length: int, steps: int, block_length: Optional[int]) -> list[tuple[int, int, int]]:
    """Split the hole into (start, end, steps) blocks; steps are spread in proportion to block size."""
    size = min(block_length or length, length)
    steps = min(steps, length)
    plan, prev = [], 0
    for start in range(0, length, size):
        end = min(start + size, length)
        cum = round(steps * end / length)
        plan.append((start, end, max(1, min(end - start, cum - prev))))
        prev = cum
    return plan


def token_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of positions where two decodes chose the same token (1.0 = identical)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return 1.0 if a.numel() == 0 else float((a == b).float().mean())


class Engine:
    """Runs a loaded CoDA model as an infilling / generation engine (one request at a time per call)."""

    def __init__(self, loaded, *, max_context: Optional[int] = None) -> None:
        self.model = loaded.model.eval()
        self.config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.mask_id = int(self.config.mask_token_id)
        self.stop_ids = {int(self.config.eos_token_id), int(self.config.pad_token_id)}
        if self.tokenizer is not None:
            self.stop_ids |= {int(self.tokenizer.eos_id), int(self.tokenizer.pad_id)}
        self.max_context = int(max_context or self.config.max_position_embeddings)
        self.model_id = uuid.uuid4().hex   # a stored context is only ever served to the model that made it

    # ----------------------------------------------------------------------------------- inputs
    def _check_ids(self, ids: Sequence[int], what: str) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise ValueError(f"{what} has token ids outside the vocabulary [0, {self.config.vocab_size}): {bad[:5]}")
        return ids

    def fit_context(self, prefix: list[int], suffix: list[int], length: int) -> tuple[list[int], list[int]]:
        """Truncate so prefix + hole + suffix fits `max_context`: drop the prefix's start and the suffix's end."""
        if length > self.max_context:
            raise ValueError(f"hole length {length} exceeds the model's context of {self.max_context} tokens; "
                             "use a smaller length")
        room = self.max_context - length
        if len(prefix) + len(suffix) <= room:
            return prefix, suffix
        keep_suffix = min(len(suffix), room // 2)
        keep_prefix = min(len(prefix), room - keep_suffix)
        keep_suffix = min(len(suffix), room - keep_prefix)
        return prefix[len(prefix) - keep_prefix:], suffix[:keep_suffix]

    # ----------------------------------------------------------------------------------- public API
    def infill(self, prefix_ids: Sequence[int], suffix_ids: Sequence[int], *, length: int,
               config: Optional[DecodeConfig] = None, num_candidates: int = 1,
               context: Optional[ContextSlot] = None, stop_when_ended: bool = True) -> Iterator[DenoiseState]:
        """Fill `length` masked tokens between prefix and suffix; yields a DenoiseState after every step.

        context: where the previous request's K/V for this caller (a document) live; with a cache, the
        first refresh recomputes only what changed since (`coda_model.context_reuse`), and the new
        context is left there. Ignored with `cache='none'` (exact decoding stays exact).
        stop_when_ended: stop once every candidate's text is final (an eos/pad with nothing masked
        before it): `hole_text` cannot change, so later blocks are not decoded. The last state is then
        `done` with the positions after the end still masked.
        """
        config = config or DecodeConfig()
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        prefix = self._check_ids(prefix_ids, "prefix_ids")
        suffix = self._check_ids(suffix_ids, "suffix_ids")
        if length == 0:
            return iter([self._empty_state(num_candidates)])
        prefix, suffix = self.fit_context(prefix, suffix, length)
        row = prefix + [self.mask_id] * length + suffix
        x = torch.tensor([row] * num_candidates, dtype=torch.long, device=self.device)
        return self._denoise(x, len(prefix), length, config, key_mask=None, context=context,
                             stop_when_ended=stop_when_ended)

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 config: Optional[DecodeConfig] = None) -> list[list[int]]:
        """Batched generation after each prompt (no suffix): returns the max_new_tokens new ids per prompt.

        Prompts are left-padded; pads are masked out of attention and positions start at each prompt's
        first token, so a row decodes as it would alone (greedy). Over-long prompts keep their end.
        """
        config = config or DecodeConfig()
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if max_new_tokens > self.max_context:
            raise ValueError(f"max_new_tokens {max_new_tokens} exceeds the model's context of {self.max_context}")
        rows = [self._check_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
        if not rows or max_new_tokens == 0:
            return [[] for _ in rows]
        room = self.max_context - max_new_tokens
        rows = [r[len(r) - min(len(r), room):] for r in rows]
        width = max(len(r) for r in rows)
        pad = int(self.config.pad_token_id)
        x = torch.tensor([[pad] * (width - len(r)) + r + [self.mask_id] * max_new_tokens for r in rows],
                         dtype=torch.long, device=self.device)
        key_mask = None
        if any(len(r) != width for r in rows):
            key_mask = torch.tensor([[False] * (width - len(r)) + [True] * (len(r) + max_new_tokens) for r in rows],
                                    device=self.device)
        state = None
        for state in self._denoise(x, width, max_new_tokens, config, key_mask=key_mask):
            pass
        return [list(map(int, t)) for t in state.tokens.tolist()]

    def hole_text(self, state: DenoiseState, candidate: int = 0, *, partial: bool = False) -> str:
        """Clean text of one candidate: ends at the first eos/pad, no special tokens, no broken UTF-8.

        partial=True: decode each run of revealed tokens on its own and join them, leaving masked spans
        out (for streaming); partial=False decodes the hole as one sequence (masks, if any, dropped).
        """
        if self.tokenizer is None:
            raise ValueError("hole_text needs a tokenizer: load the model directory with its tokenizer files")
        tokens, masked = state.tokens[candidate].tolist(), state.masked[candidate].tolist()
        runs: list[list[int]] = [[]]
        for tok, is_masked in zip(tokens, masked):
            if is_masked:
                if partial and runs[-1]:
                    runs.append([])
                continue
            if tok in self.stop_ids:
                break
            runs[-1].append(tok)
        text = "".join(self.tokenizer.decode(r, skip_special_tokens=True) for r in runs if r)
        return text.replace("\ufffd", "")  # bytes of a character cut by the hole's end or a masked span

    def hole_spans(self, state: DenoiseState, candidate: int = 0) -> list[tuple[str, float]]:
        """One candidate's hole as (text, confidence) pieces, one per token, in order, up to the first eos/pad.

        Why: a confidence gate cuts a suggestion at its first unsure token, and a cut must never fall
        inside a token or a UTF-8 character. Each piece is the text its token adds to the decoded
        prefix; a token that ends inside a character is merged with the tokens that complete it (the
        piece then has the lowest of their confidences). Masked positions are skipped. The pieces join
        to `hole_text(state, candidate)` for a finished hole.
        """
        if self.tokenizer is None:
            raise ValueError("hole_spans needs a tokenizer: load the model directory with its tokenizer files")
        tokens, masked = state.tokens[candidate].tolist(), state.masked[candidate].tolist()
        conf = state.confidence[candidate].tolist()
        ids: list[int] = []
        spans: list[tuple[str, float]] = []
        emitted, pending = "", 1.0
        for tok, is_masked, p in zip(tokens, masked, conf):
            if is_masked:
                continue
            if tok in self.stop_ids:
                break
            ids.append(tok)
            pending = min(pending, float(p))
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue      # this token ends inside a character: the next one completes the piece
            if text != emitted:
                spans.append((text[len(emitted):], pending))
            emitted, pending = text, 1.0
        return spans

    # ----------------------------------------------------------------------------------- the loop
    def _empty_state(self, num_candidates: int) -> DenoiseState:
        return DenoiseState(tokens=torch.empty(num_candidates, 0, dtype=torch.long),
                            masked=torch.empty(num_candidates, 0, dtype=torch.bool),
                            confidence=torch.empty(num_candidates, 0), step=0, steps=0, done=True)

    def _denoise(self, x: torch.Tensor, h0: int, length: int, config: DecodeConfig,
                 key_mask: Optional[torch.Tensor], context: Optional[ContextSlot] = None,
                 stop_when_ended: bool = False) -> Iterator[DenoiseState]:
        """x: [C, N] with masks at [h0, h0 + length). Yields after every forward."""
        num_rows, seq_len = x.shape
        if key_mask is None:
            position_ids = torch.arange(seq_len, device=x.device).expand(num_rows, seq_len)
        else:
            position_ids = (key_mask.long().cumsum(-1) - 1).clamp(min=0)
        generator = torch.Generator(device=x.device)
        if config.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(config.seed))
        cfg = self.config
        cache = make_cache(config.cache, cfg.num_hidden_layers, num_rows, cfg.num_key_value_heads, seq_len,
                           cfg.head_dim, self.dtype, x.device)
        ctx = _Context(self, x, position_ids, key_mask, cache, context if cache is not None else None, h0)
        tokens = x[:, h0:h0 + length]  # a view: revealing a token writes it into the model input
        masked = torch.ones(num_rows, length, dtype=torch.bool, device=x.device)
        confidence = torch.zeros(num_rows, length, dtype=torch.float32, device=x.device)
        plan = plan_blocks(length, config.steps, config.block_length)
        total = sum(s for _, _, s in plan)
        step = 0
        prev_window: Optional[tuple[int, int]] = None
        for start, end, block_steps in plan:
            lo, hi = h0 + start, h0 + end
            window = (max(lo - 1, 0), hi)
            for i in range(block_steps):
                if not masked[:, start:end].any():
                    break
                with torch.no_grad():
                    # the lm_head (151,936 rows) only where some candidate still has a mask
                    columns = masked[:, start:end].any(0).nonzero().squeeze(-1)
                    targets = lo + columns
                    if cache is None:
                        logits = self._full_logits(x, targets, position_ids, key_mask)
                    elif i == 0 and prev_window is not None and config.vicinity is not None:
                        # dInfer's vicinity refresh: the decided block and the new window, not the file
                        span = (max(0, prev_window[0] - config.vicinity), min(seq_len, window[1] + config.vicinity))
                        logits = ctx.refresh(targets, window, span)
                    elif i == 0 or (config.cache_refresh is not None and i % config.cache_refresh == 0):
                        logits = ctx.refresh(targets, window, None, first=prev_window is None and i == 0)
                    else:
                        logits = self._cached_logits(x, targets, cache, position_ids)
                    denoise_step(logits, tokens[:, start:end], masked[:, start:end], confidence[:, start:end],
                                 step=i, steps=block_steps, alg=config.alg, temperature=config.temperature,
                                 top_p=config.top_p, top_k=config.top_k, alg_temp=config.alg_temp, eps=config.eps,
                                 threshold=config.threshold, generator=generator, columns=columns)
                step += 1
                done = not bool(masked.any()) or (stop_when_ended and self.text_ended(tokens, masked))
                yield DenoiseState(tokens=tokens.clone(), masked=masked.clone(), confidence=confidence.clone(),
                                   step=step, steps=total, done=done)
                if done:
                    return
            prev_window = window

    def text_ended(self, tokens: torch.Tensor, masked: torch.Tensor) -> bool:
        """True when every row has an eos/pad with no masked position before it: `hole_text` is final."""
        stops = torch.tensor(sorted(self.stop_ids), device=tokens.device)
        stop = torch.isin(tokens, stops) & ~masked
        length = tokens.shape[1]
        first_stop = torch.where(stop.any(1), stop.int().argmax(1), length + 1)
        first_mask = torch.where(masked.any(1), masked.int().argmax(1), length)
        return bool((first_stop < first_mask).all())

    def _full_logits(self, x: torch.Tensor, targets: torch.Tensor, position_ids: torch.Tensor,
                     key_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Exact mode: shifted logits [C, K, V] for positions `targets` from a forward over the whole sequence."""
        out_pos = (targets - int(self.config.logit_shift)).clamp(min=0)
        return self.model(x, position_ids=position_ids, attention_mask=key_mask, logits_index=out_pos).logits

    def _cached_logits(self, x: torch.Tensor, targets: torch.Tensor, cache, position_ids: torch.Tensor) -> torch.Tensor:
        """A step inside a block: only the cache's input span runs, against the cached context K/V."""
        out_pos = (targets - int(self.config.logit_shift)).clamp(min=0)
        i0, i1 = cache.input_span(x.shape[1])
        out = self.model(x[:, i0:i1], position_ids=position_ids[:, i0:i1], attention_mask=cache.key_mask,
                         past_key_values=cache.past(), logits_index=out_pos - i0)
        return out.logits


class _Context:
    """One request's context K/V: full or partial refreshes into a `SequenceKV`, which fills the cache.

    The first refresh of a request may start from the slot's stored entry (recomputing only what
    changed) and leaves the new entry there; a partial refresh recomputes a span against the rest.
    Padded batches (`key_mask`) always refresh in full.
    """

    def __init__(self, engine: Engine, x: torch.Tensor, position_ids: torch.Tensor,
                 key_mask: Optional[torch.Tensor], cache, slot: Optional[ContextSlot], h0: int) -> None:
        self.engine, self.x, self.position_ids, self.key_mask, self.cache = engine, x, position_ids, key_mask, cache
        self.slot = slot if key_mask is None else None
        self.h0 = h0
        self.kv: Optional[SequenceKV] = None
        self.last_span: Optional[tuple[int, int]] = None   # what the latest refresh recomputed (tests, benchmarks)

    def refresh(self, targets: torch.Tensor, window: tuple[int, int], span: Optional[tuple[int, int]],
                first: bool = False) -> torch.Tensor:
        """Recompute K/V of `span` (None = every position), fill the cache for `window`; logits at `targets`."""
        eng, x = self.engine, self.x
        reuse = None
        if first and self.slot is not None:
            ids = x[0].tolist()
            reuse = self._reuse(ids, window)
            span = (reuse[1].start, reuse[1].end) if reuse is not None else None
        if span is None or self.key_mask is not None or (self.kv is None and reuse is None):
            span = (0, x.shape[1])
        a, b = span
        out_pos = (targets - int(eng.config.logit_shift)).clamp(min=0) - a
        if (a, b) == (0, x.shape[1]):
            out = eng.model(x, position_ids=self.position_ids, attention_mask=self.key_mask, use_cache=True,
                            logits_index=out_pos)
            self.kv = SequenceKV.from_layers(out.key_values)
        else:
            out = eng.model(x[:, a:b], position_ids=self.position_ids[:, a:b], past_key_values=self.kv.context(a, b),
                            use_cache=True, logits_index=out_pos)
            self.kv.write(a, out.key_values)
        self.last_span = (a, b)
        self.cache.update(self.kv.layers(), window, self.key_mask)
        if first and self.slot is not None:
            old, plan = reuse if reuse is not None else (None, None)
            self.slot.store.put(self.slot.key, self.kv.entry(
                ids, eng.model_id, self.h0, reuses=old.reuses + 1 if plan else 0,
                changed=old.changed + plan.changed if plan else 0))
        return out.logits

    def _reuse(self, ids: list[int], window: tuple[int, int]):
        """(entry, plan) when the slot holds a matching context worth reusing, else None."""
        eng, cfg = self.engine, self.engine.config
        store = self.slot.store
        entry = store.take_valid(self.slot.key, eng.model_id, (cfg.num_hidden_layers, cfg.num_key_value_heads,
                                 cfg.head_dim), eng.dtype, eng.device)
        plan = plan_reuse(entry, ids, self.h0, window, store.policy) if entry is not None else None
        if plan is None:
            return None
        self.kv = SequenceKV.from_entry(entry, plan, self.x.shape[1], self.x.shape[0], cfg.rope_theta)
        return entry, plan
