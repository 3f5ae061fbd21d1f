"""The confidence gate on the tiny random-weight model with injected confidences.

Random weights give near-uniform confidences, so each test writes the confidences it needs into a
real DenoiseState (real tokenizer, real `Engine.hole_spans`) and checks where the gate cuts, that it
hides, that gate-off changes nothing, and that a cut never falls inside a token or a UTF-8 character.
"""

from __future__ import annotations

import pytest
import torch

from coda_lsp.documents import Document
from coda_lsp.gate import Candidate, GateConfig, Span, apply_gate, cut, first_line_score, gated_text, hidden_note
from coda_lsp.options import ServerOptions, merge_options
from coda_lsp.postprocess import PostContext
from coda_lsp import pipeline
from coda_lsp.loading import load_engine
from coda_model.checkpoint import load_model
from coda_model.engine import DenoiseState, Engine


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_model(tiny_model_dir, device="cpu", dtype="float32"))


def state_of(ids: list[int], conf: list[float]) -> DenoiseState:
    return DenoiseState(tokens=torch.tensor([ids]), masked=torch.zeros(1, len(ids), dtype=torch.bool),
                        confidence=torch.tensor([conf]), step=1, steps=1, done=True)


def pieces(engine, text: str, conf_of) -> tuple[Candidate, list[int]]:
    ids = engine.tokenizer.encode(text)
    return Candidate.of(engine.hole_spans(state_of(ids, [conf_of(i) for i in range(len(ids))]))), ids


def test_spans_are_whole_tokens_and_join_to_the_hole_text(engine):
    tok = engine.tokenizer
    ids = tok.encode("total = a + b  # 🦜 ok") + [tok.eos_id] + tok.encode("junk")
    state = state_of(ids, [0.5] * len(ids))
    spans = engine.hole_spans(state)
    assert "".join(t for t, _ in spans) == engine.hole_text(state) == "total = a + b  # 🦜 ok"
    # every piece is the decode of whole tokens; the parrot's bytes span several tokens and form one piece
    assert "🦜" in [t.strip() for t, _ in spans]
    assert all("\ufffd" not in t for t, _ in spans)


def test_cut_at_the_first_unsure_token_never_inside_a_character(engine):
    tok = engine.tokenizer
    text = "x = '🦜🦜' + y"
    ids = tok.encode(text)
    parrot_tokens = [i for i in range(len(ids)) if tok.decode(ids[:i + 1]).endswith("\ufffd")]
    assert parrot_tokens, "the test needs a character split over several tokens"
    low = parrot_tokens[0] + 1          # a token that *completes* the first parrot is unsure
    cand, _ = pieces(engine, text, lambda i: 0.1 if i == low else 0.95)
    kept, was_cut = cut(cand, 0.5)
    assert was_cut and kept == "x = '"   # the whole parrot goes, not half of its bytes
    for threshold in (0.05, 0.0):
        assert cut(cand, threshold) == (text, False)


def test_gate_hides_on_a_low_first_line_and_off_changes_nothing(engine):
    text = "return a + b\n    # done"
    sure, _ = pieces(engine, text, lambda i: 0.9)
    unsure_first, ids = pieces(engine, text, lambda i: 0.2 if i < 3 else 0.99)
    first_line_tokens = len(engine.tokenizer.encode("return a + b"))
    assert first_line_score(sure) == pytest.approx(0.9)
    assert first_line_score(unsure_first, "min") == pytest.approx(0.2)
    assert first_line_score(unsure_first, "mean") == pytest.approx((3 * 0.2 + (first_line_tokens - 3) * 0.99)
                                                                   / first_line_tokens, abs=1e-6)
    gate = GateConfig(min_confidence=0.0, min_shown_confidence=0.6)
    assert apply_gate(unsure_first, GateConfig(0.0, 0.6, "min")) is None
    assert apply_gate(sure, gate) == (text, False)
    assert apply_gate(unsure_first, GateConfig()) == (text, False)      # gate off: untouched
    assert first_line_score(Candidate.of([("\n", 0.99), ("   ", 0.1)])) == 0.0


def test_a_cut_suggestion_is_not_closed_by_post_processing():
    c = Candidate((Span("print(", 0.9), Span("value", 0.8), Span(")", 0.2)))
    pctx = PostContext(kind="line", line_prefix="    ")
    assert gated_text(c, pctx, GateConfig()) == "print(value)"
    assert gated_text(c, pctx, GateConfig(min_confidence=0.5)) == "print(value"   # no guessed ")" added
    assert gated_text(c, pctx, GateConfig(min_confidence=0.85)) == "print("
    assert gated_text(c, pctx, GateConfig(min_shown_confidence=0.95)) is None


def test_infill_job_candidates_feed_the_gate(tiny_model_dir):
    """The server's job on the tiny model, its confidences overwritten: gate off = the plain items, on = hidden."""
    opts = ServerOptions(model_path=str(tiny_model_dir), max_tokens=8, context_tokens=256)
    lm = load_engine(opts)
    doc = Document("file:///t.py", "def add(a, b):\n    total = a\n    return total\n", 0, "python")
    ctx = pipeline.build_context(doc, len("def add(a, b):\n    total = a"), None, opts)
    job = pipeline.infer(lm, pipeline.infer_request(ctx, opts, 1))
    while not job.done:
        job.step()
    [cand] = job.candidates()
    assert cand.text == job.texts()[0]
    plain = pipeline.postprocess(job.texts(), ctx)
    assert pipeline.postprocess([cand], ctx, GateConfig()) == plain
    sure = Candidate(tuple(Span(s.text, 0.9) for s in cand.spans))
    assert pipeline.postprocess([sure], ctx, GateConfig(0.5, 0.5)) == plain
    hidden = Candidate(tuple(Span(s.text, 0.1) for s in cand.spans))
    assert pipeline.postprocess([hidden], ctx, GateConfig(0.0, 0.5)) == []
    # the streaming prefix: everything decoded, cut by minConfidence
    assert job.prefix(GateConfig()) == cand.text and job.prefix(GateConfig(0.5, 0.0)) == ""


def test_the_note_says_why_nothing_is_shown():
    unsure = Candidate((Span("    ", 0.9), Span("return", 0.3), Span(" x", 0.95)))
    note = hidden_note([unsure], GateConfig(min_confidence=0.8))
    assert note and "best first token 0.30" in note and "minConfidence 0.8" in note
    assert hidden_note([unsure], GateConfig(min_confidence=0.2)) is None      # something is shown
    assert hidden_note([unsure], GateConfig()) is None                        # gate off
    assert "minShownConfidence 0.7" in hidden_note([unsure], GateConfig(0.0, 0.7))


def test_gate_settings_are_validated():
    opts, warnings = merge_options(ServerOptions(), {"minConfidence": 0.3, "minShownConfidence": 0.4})
    assert (opts.min_confidence, opts.min_shown_confidence) == (0.3, 0.4) and not warnings
    opts, warnings = merge_options(ServerOptions(), {"minConfidence": 1.5})
    assert opts.min_confidence == ServerOptions().min_confidence and "minConfidence" in warnings[0]


def test_gate_benchmark_picks_a_setting_no_held_out_set_loses_on():
    from coda_bench.gate import pick

    def row(mc, value, cov):
        return {"score": "mean", "min_confidence": mc, "min_shown_confidence": 0.0, "min_chars": 0,
                "value_per_request": value, "coverage": cov}
    a = [row(0.8, 0.06, 0.02), row(0.9, 0.05, 0.01)]
    b = [row(0.8, -0.12, 0.03), row(0.9, 0.0, 0.0)]
    assert pick([a])["min_confidence"] == 0.8          # one set: its best
    assert pick([a, b])["min_confidence"] == 0.9       # both: the best where neither is below 0
