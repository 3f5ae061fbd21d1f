"""In-process units of the server side: trigger-kind encodings, options, scheduler caches, CLI parsing."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest
from lsprotocol import types

from coda_lsp.cli import UsageError, parse_where
from coda_lsp.options import ServerOptions, merge_options
from coda_lsp.scheduler import ResultCache, Scheduler, TypeThroughCache
from coda_lsp.server import build_server
from coda_lsp.loading import ModelUnavailable, resolve_model_path
import coda_lsp.loading as loading_mod
import coda_lsp.pipeline as pipeline_mod
import coda_lsp.service as service_mod


def structure_params(server, kind: int) -> types.InlineCompletionParams:
    raw = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0},
           "context": {"triggerKind": kind}}
    return server.protocol._converter.structure(raw, types.InlineCompletionParams)


def test_trigger_kinds_accept_both_encodings():
    server = build_server()
    Invoked, Automatic = types.InlineCompletionTriggerKind.Invoked, types.InlineCompletionTriggerKind.Automatic
    assert structure_params(server, 1).context.trigger_kind == Invoked      # LSP 3.18: 1 = Invoked
    assert structure_params(server, 2).context.trigger_kind == Automatic
    assert structure_params(server, 0).context.trigger_kind == Invoked      # pre-3.18: 0 = Invoked ...
    assert structure_params(server, 1).context.trigger_kind == Automatic    # ... and then 1 = Automatic


def test_options_parse_camel_case_keys_and_warn_on_bad_values():
    opts, warnings = merge_options(ServerOptions(), {
        "modelPath": "/m", "device": "CPU", "dtype": "bfloat16", "steps": 8, "maxTokens": 32, "algorithm": "origin",
        "temperature": 0.5, "threshold": 0.9, "debounceMs": 0, "contextTokens": 512,
        "enabledLanguages": ["python"], "streaming": True, "cache": "prefix"})
    assert warnings == [] and opts.decode.cache == "prefix"
    assert (opts.model_path, opts.device, opts.decode.steps, opts.max_tokens, opts.decode.alg, opts.decode.threshold,
            opts.debounce_ms, opts.context_tokens, opts.streaming) == ("/m", "cpu", 8, 32, "origin", 0.9, 0, 512, True)
    assert opts.language_enabled("python") and not opts.language_enabled("go")
    bad, warnings = merge_options(opts, {"steps": -1, "algorithm": "magic", "nope": 1, "streaming": "yes", "cache": "lru"})
    assert bad == opts and len(warnings) == 5 and all("ignored" in w for w in warnings)
    assert merge_options(opts, "garbage")[0] == opts


def test_type_through_cache_returns_the_rest_of_a_prediction():
    cache = TypeThroughCache()
    text = "x = \nprint(x)\n"
    cache.put("u", text, 4, 4, ["foo(1)", "bar"])
    typed = "x = fo\nprint(x)\n"
    assert cache.get("u", typed, 6) == (["o(1)"], 0)
    assert cache.get("u", "x = zz\nprint(x)\n", 6) is None          # typed something else
    assert cache.get("u", "x = fo\nprint(y)\n", 6) is None          # the suffix changed
    assert cache.get("u", text, 4) == (["foo(1)", "bar"], 0)


def test_result_cache_is_an_lru():
    cache = ResultCache(max_entries=2)
    for i in range(3):
        cache.put(ResultCache.key(i), [str(i)])
    assert cache.get(ResultCache.key(0)) is None and cache.get(ResultCache.key(2)) == ["2"]


class CountingJob:
    """A job whose steps block until the test releases them (to observe cancel-previous)."""

    def __init__(self, steps: int, gate: threading.Event) -> None:
        self.left, self.gate, self.done = steps, gate, False

    def step(self):
        self.gate.wait(5)
        self.left -= 1
        self.done = self.left == 0
        return self.left


async def test_scheduler_newer_ticket_supersedes_older_within_one_step():
    sched = Scheduler()
    gate = threading.Event()
    seen_old: list = []
    old = sched.ticket("doc")
    old_task = asyncio.ensure_future(sched.run(old, lambda: CountingJob(50, gate), seen_old.append))
    new = sched.ticket("doc")
    assert old.stale and not new.stale
    gate.set()
    assert await old_task is None
    assert len(seen_old) <= 1
    job = await sched.run(new, lambda: CountingJob(3, gate), lambda p: None)
    assert job is not None and job.done
    sched.shutdown()


def test_missing_default_model_says_to_pass_model(monkeypatch, tmp_path):
    monkeypatch.setattr(loading_mod, "default_model_dir", lambda: tmp_path)
    with pytest.raises(ModelUnavailable, match="--model"):
        resolve_model_path(None)
    assert resolve_model_path(str(tmp_path)) == tmp_path
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve_model_path(str(tmp_path / "typo"))


def test_cli_positions_are_parsed_or_rejected_with_the_expected_form():
    assert parse_where("a/b.py:4:9", False)[1:] == ((4, 9), None)
    assert parse_where("C:/x.py:1:2-3:4", True)[1:] == ((1, 2), (3, 4))
    with pytest.raises(UsageError, match="FILE:LINE:COL"):
        parse_where("a.py:4", False)


async def test_debounce_lets_a_newer_request_replace_a_waiting_one_without_running_the_model():
    sched = Scheduler()
    gate = threading.Event()
    gate.set()
    made: list[str] = []

    def make(name):
        def factory():
            made.append(name)
            return CountingJob(1, gate)
        return factory

    first = asyncio.ensure_future(sched.run(sched.ticket("doc"), make("first"), lambda p: None, debounce_ms=50))
    await asyncio.sleep(0)          # let the first request enter its debounce wait
    second = await sched.run(sched.ticket("doc"), make("second"), lambda p: None, debounce_ms=0)
    assert await first is None and second is not None and made == ["second"]
    sched.shutdown()


def test_cpu_threads_are_measured_unless_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert loading_mod.cpu_threads(None) is None      # None: the load-time probe measures the count
    assert loading_mod.cpu_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert loading_mod.cpu_threads(None) == 6
    opts, warnings = merge_options(ServerOptions(), {"threads": 2})
    assert opts.threads == 2 and not warnings
    opts, warnings = merge_options(opts, {"threads": 0})
    assert opts.threads == 2 and "threads" in warnings[0]
    assert merge_options(opts, {"threads": None})[0].threads is None


def test_loading_the_model_sets_the_decoding_threads(tiny_model_dir):
    import torch

    before = torch.get_num_threads()
    try:
        loading_mod.load_engine(ServerOptions(model_path=str(tiny_model_dir), threads=1))
        assert torch.get_num_threads() == 1
        loading_mod.load_engine(ServerOptions(model_path=str(tiny_model_dir), threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class ThreadsSeen:
    """A one-step job that records the torch thread count it ran with (on the worker thread)."""

    def __init__(self):
        self.seen, self.done = None, False

    def step(self):
        import torch
        self.seen, self.done = torch.get_num_threads(), True
        return self.seen


async def test_requests_run_with_the_threads_setting_and_speculation_with_one():
    import torch

    svc = service_mod.CompletionService(ServerOptions(threads=1))
    before = await svc.scheduler.call(torch.get_num_threads)
    sched = svc.scheduler
    try:
        for threads in (2, 1, 2):
            svc.options = ServerOptions(threads=threads)
            svc.apply_threads()          # no reload: the next job picks it up
            job = await sched.run(sched.ticket("doc"), ThreadsSeen, lambda p: None)
            assert job.seen == threads
            spec = await sched.run(sched.ticket("speculate:doc"), ThreadsSeen, lambda p: None, background=True)
            assert spec.seen == 1
    finally:
        await svc.scheduler.call(torch.set_num_threads, before)
        svc.shutdown()


def test_block_length_setting_reaches_the_decoder(tiny_model_dir):
    """blockLength (default 8) sets the engine's block with a cache; exact mode decodes the hole as one block."""
    from coda_lsp.context import build_context
    from coda_lsp.documents import Document

    opts, warnings = merge_options(ServerOptions(), {"blockLength": 4})
    assert opts.decode.block_length == 4 and not warnings
    assert merge_options(opts, {"blockLength": 0})[0].decode.block_length == 4  # bad value: kept, with a warning
    lm = loading_mod.load_engine(ServerOptions(model_path=str(tiny_model_dir), threads=1))
    doc = Document("file:///a.py", "def f(x):\n    \n    return x\n", 1, "python")
    ctx = build_context(doc, doc.text.index("    \n") + 4)
    def job_block(o: ServerOptions):
        return pipeline_mod.infer(lm, pipeline_mod.infer_request(ctx, o, 1)).request.decode.block_length

    assert job_block(opts) == 4
    assert job_block(ServerOptions()) == ServerOptions().decode.block_length == 8
    assert job_block(replace(opts, decode=replace(opts.decode, cache="none"))) is None


def test_result_cache_key_changes_with_every_decode_setting():
    """Equal keys must mean equal decodes: a changed blockLength (or any other decode field, the model or the
    context budget) is never answered from results decoded with the old value."""
    from dataclasses import fields

    from coda_lsp.context import build_context
    from coda_lsp.documents import Document

    doc = Document("file:///a.py", "def f(x):\n    \n    return x\n", 1, "python")
    ctx = build_context(doc, doc.text.index("    \n") + 4)
    base = ServerOptions()
    key = pipeline_mod.infer_request(ctx, base, 1).cache_key()
    assert pipeline_mod.infer_request(ctx, ServerOptions(), 1).cache_key() == key
    other = {"steps": 8, "alg": "origin", "temperature": 0.5, "top_p": 0.5, "top_k": 3, "alg_temp": 0.5,
             "eps": 0.01, "threshold": 0.5, "block_length": 16, "cache": "prefix", "seed": 7, "cache_refresh": 2,
             "vicinity": None}
    assert set(other) == {f.name for f in fields(base.decode)}, "new DecodeConfig field: add it here"
    for name, value in other.items():
        changed = replace(base, decode=replace(base.decode, **{name: value}))
        assert pipeline_mod.infer_request(ctx, changed, 1).cache_key() != key, name
    for changed in (replace(base, model_path="/other"), replace(base, context_tokens=512)):
        assert pipeline_mod.infer_request(ctx, changed, 1).cache_key() != key
    assert pipeline_mod.infer_request(ctx, base, 3).cache_key() != key
