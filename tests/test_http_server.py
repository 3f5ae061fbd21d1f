"""`coda-lsp serve` over real HTTP on 127.0.0.1 (uvicorn + Starlette in this process, httpx as the client).

The model is the tiny random-weight CoDA directory with its head scaled up (peaked distributions, so
greedy decodes have no near-ties that float noise from batching could flip).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from coda_lsp.http.config import ServeConfig
from coda_lsp.http.serve import check_start
from live_http import LiveServer, config, sharp_dir  # noqa: F401  (fixture)

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def server(sharp_dir):
    s = LiveServer(config(sharp_dir))
    s.wait()
    yield s
    s.close()


def infill(server: LiveServer, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, **body}, timeout=60)


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event name or 'message', data) per SSE event."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((name, "\n".join(data)))
    return out


# ------------------------------------------------------------------------------------------- endpoints
def test_health_and_models(server) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == server.worker.model_name


def test_infill_answers_content_and_llama_cpp_timings(server) -> None:
    r = infill(server, n_predict=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["content"], str) and body["stop"] is True
    assert 0 <= body["tokens_predicted"] <= 6 and body["tokens_evaluated"] > 0
    assert {"prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n", "predicted_ms",
            "predicted_per_token_ms", "predicted_per_second"} <= set(body["timings"])
    assert body["timings"]["predicted_n"] == body["tokens_predicted"]
    assert body["stop_type"] in ("eos", "limit", "word") and body["truncated"] is False


def test_a_request_shaped_as_llama_vim_sends_it_gets_the_fields_it_reads(server) -> None:
    """llama.vim's `llama#fim` body, headers and response checks (autoload/llama.vim)."""
    fields = ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
              "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
              "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated", "tokens_cached"]
    # the ring buffer's chunks as llama.vim sends them once a second file was visited: {filename, time, text}
    ring = [{"filename": "util.py", "time": [1765000000, 123456], "text": "def sub(a, b):\n    return a - b\n"},
            {"text": "MAX = 3\n", "time": [1765000001, 0]}]
    request = {"id_slot": 0, "input_prefix": "def add(a, b):\n", "input_suffix": "\n\nprint(add(1, 2))\n",
               "input_extra": ring,
               "prompt": "    return ", "n_predict": 128, "stop": [], "n_indent": 4, "top_k": 40, "top_p": 0.90,
               "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True,
               "t_max_prompt_ms": 500, "t_max_predict_ms": 1000, "response_fields": fields}
    r = httpx.post(f"{server.url}/infill", content=json.dumps(request),
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    raw = r.text
    assert re.match(r"^\s*{", raw) and re.search(r'"content"\s*:"', raw), raw   # llama.vim's fast check
    body = r.json()
    assert set(body) == set(fields) - {"tokens_cached"}   # no KV slot: left out rather than a false 0
    assert isinstance(body["content"], str) and isinstance(body["truncated"], bool)
    assert body["timings/predicted_n"] >= 0 and body["timings/prompt_n"] > 0
    # the ring-buffer warm-up request: n_predict 0, nothing to predict, answered at once
    warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": request["input_extra"], "prompt": "",
            "n_predict": 0, "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True,
            "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""]}
    assert httpx.post(f"{server.url}/infill", json=warm, timeout=60).status_code == 200


def test_infill_stream_sends_content_deltas_that_add_up_to_the_answer(server) -> None:
    whole = infill(server, n_predict=8).json()["content"]
    r = infill(server, n_predict=8, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(d) for name, d in sse_events(r.text)]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole
    assert "timings" in events[-1] and events[-1]["tokens_predicted"] >= 0


def test_stream_denoise_extension_streams_every_step(server) -> None:
    r = infill(server, n_predict=8, stream_denoise=True, decode={"steps": 8, "threshold": None, "block_length": 8})
    events = sse_events(r.text)
    steps = [json.loads(d) for name, d in events if name == "denoise"]
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert all(s["steps"] == 8 for s in steps)
    assert [s["masked_count"] for s in steps] == sorted((s["masked_count"] for s in steps), reverse=True)
    assert steps[-1]["masked_count"] == 0 and steps[-1]["done"] and not steps[0]["done"]
    final = json.loads([d for name, d in events if name == "message"][-1])
    assert final["stop"] is True


def test_openai_completions_with_suffix_plain_and_streamed(server) -> None:
    body = {"model": "anything", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 6, "temperature": 0, "n": 2}
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and [c["index"] for c in out["choices"]] == [0, 1]
    assert all(c["finish_reason"] in ("stop", "length") for c in out["choices"])
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    s = httpx.post(f"{server.url}/v1/completions", json={**body, "n": 1, "stream": True}, timeout=60)
    events = sse_events(s.text)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == out["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["delta"]["content"] == c["choices"][0]["text"] for c in chunks)
    fim = httpx.post(f"{server.url}/v1/fim/completions", json={**body, "n": 1}, timeout=60).json()
    assert fim["choices"][0]["text"] == out["choices"][0]["text"]


# ------------------------------------------------------------------------------------------- batching
PROMPTS = [("def add(a, b):\n    return ", "\n"), ("import os\n", "\nprint(1)\n"),
           ("class A:\n    def f(self):\n        ", ""), ("x = [1, 2, 3]\ny = ", "\n"), ("for i in range(10):\n", "")]


async def test_concurrent_requests_share_batches_and_equal_one_by_one(server) -> None:
    def body(p, s):
        return {"input_prefix": p, "input_suffix": s, "n_predict": 8}
    async with httpx.AsyncClient(timeout=60) as client:
        alone = [(await client.post(f"{server.url}/infill", json=body(p, s))).json()["content"] for p, s in PROMPTS]
        before = server.worker.batches
        together = await asyncio.gather(*(client.post(f"{server.url}/infill", json=body(p, s)) for p, s in PROMPTS))
    assert [r.json()["content"] for r in together] == alone
    assert server.worker.batches - before < len(PROMPTS), "concurrent requests never shared a batch"


async def test_load_8_clients_x_50_requests_without_errors(server) -> None:
    async def client_loop(i: int, client: httpx.AsyncClient) -> list[int]:
        codes = []
        for j in range(50):
            p, s = PROMPTS[(i + j) % len(PROMPTS)]
            r = await client.post(f"{server.url}/infill", json={"input_prefix": p, "input_suffix": s, "n_predict": 2,
                                                                "decode": {"steps": 2}})
            codes.append(r.status_code)
        return codes
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=16)) as client:
        results = await asyncio.gather(*(client_loop(i, client) for i in range(8)))
    assert [c for codes in results for c in codes] == [200] * 400


# ------------------------------------------------------------------------------------------- bad input
BAD = [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"input_prefix": 3}).encode(), 400, "input_prefix"),
    (json.dumps({"n_predict": "many"}).encode(), 400, "n_predict"),
    (json.dumps({"n_predict": -5}).encode(), 400, "n_predict"),
    (json.dumps({"n_predict": 10**12}).encode(), 400, "n_predict"),
    (json.dumps({"n_predict": True}).encode(), 400, "n_predict"),
    (json.dumps({"temperature": "hot"}).encode(), 400, "temperature"),
    (json.dumps({"top_p": 3}).encode(), 400, "top_p"),
    (json.dumps({"input_extra": [{"filename": 1}]}).encode(), 400, "input_extra"),
    (json.dumps({"input_extra": [{"path": "/etc/passwd"}]}).encode(), 400, "input_extra"),
    (json.dumps({"input_extra": [{"filename": "a.py", "text": 3, "time": [1, 2]}]}).encode(), 400, "input_extra"),
    (json.dumps({"input_extra": [{"filename": None, "text": "x"}]}).encode(), 400, "input_extra"),
    (json.dumps({"surprise": 1}).encode(), 400, "surprise"),
    (json.dumps({"decode": {"steps": 0}}).encode(), 400, "steps"),
    (json.dumps({"decode": {"steps": 10**6}}).encode(), 400, "steps"),
    (json.dumps({"decode": {"alg": "magic"}}).encode(), 400, "alg"),
    (json.dumps({"decode": {"model_path": "/tmp"}}).encode(), 400, "model_path"),
    (json.dumps({"n_cmpl": 1000}).encode(), 400, "n_cmpl"),
    (json.dumps({"context_tokens": -1}).encode(), 400, "context_tokens"),
]


@pytest.mark.parametrize("raw,status,needle", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_serving(server, raw, status, needle) -> None:
    r = httpx.post(f"{server.url}/infill", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text
    assert infill(server, n_predict=2).status_code == 200


def test_openai_bad_input(server) -> None:
    for body, needle in [({"suffix": "x"}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"),
                         ({"prompt": "a", "max_tokens": -1}, "max_tokens"), ({"prompt": "a", "echo": True}, "echo"),
                         ({"prompt": "a", "n": 0}, "'n'")]:
        r = httpx.post(f"{server.url}/v1/completions", json=body)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], (body, r.text)


def test_huge_bodies_get_413_with_or_without_content_length(server) -> None:
    big = json.dumps({"input_prefix": "x" * (2 << 20)}).encode()
    r = httpx.post(f"{server.url}/infill", content=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/infill", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]))
    assert r.status_code == 413
    assert infill(server, n_predict=2).status_code == 200


def test_client_disconnecting_mid_stream_leaves_the_server_serving(server) -> None:
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "stream_denoise": True,
            "decode": {"steps": 8, "threshold": None, "block_length": 8}}
    with httpx.stream("POST", f"{server.url}/infill", json=body, timeout=60) as r:
        first = next(r.iter_lines())
        assert first.startswith("event: denoise")
    # the stream was closed after one event; the next requests are answered normally
    assert infill(server, n_predict=4).status_code == 200
    assert infill(server, n_predict=4, stream=True).text.count("data:") >= 1


# ------------------------------------------------------------------------------------------- limits / keys
def test_full_queue_answers_503_and_clears(sharp_dir) -> None:
    s = LiveServer(config(sharp_dir, max_queue=1, max_batch=1, batch_window_ms=0))
    s.wait()
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=60) as c:
                return await asyncio.gather(*(c.post(f"{s.url}/infill", json={
                    "input_prefix": PREFIX, "n_predict": 8, "decode": {"steps": 8, "threshold": None}}) for _ in range(6)))
        codes = [r.status_code for r in asyncio.run(burst())]
        busy = [r for r in asyncio.run(burst()) if r.status_code == 503]
        assert 200 in codes and 503 in codes
        assert not busy or "server busy" in busy[0].json()["error"]["message"]
        assert infill(s, n_predict=2).status_code == 200
    finally:
        s.close()


def test_api_key_rules(sharp_dir) -> None:
    s = LiveServer(config(sharp_dir, api_key="s3cret"))
    s.wait()
    try:
        assert httpx.get(f"{s.url}/health").status_code == 200          # public, like llama-server
        url = f"{s.url}/infill"
        assert httpx.post(url, json={"n_predict": 1}).status_code == 401
        r = httpx.post(url, json={"n_predict": 1}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert httpx.get(f"{s.url}/v1/models").status_code == 401
        assert httpx.post(url, json={"n_predict": 1}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.post(url, json={"n_predict": 1}, headers={"X-Api-Key": "s3cret"}).status_code == 200
    finally:
        s.close()
    assert "API key" in check_start(ServeConfig(host="0.0.0.0"))
    assert check_start(ServeConfig(host="0.0.0.0", api_key="k", model_path=str(sharp_dir))) is None
    assert check_start(ServeConfig(host="127.0.0.1", model_path=str(sharp_dir))) is None


def test_a_model_that_fails_to_load_is_reported_by_health_and_requests(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    s = LiveServer(config(tmp_path))
    s.wait("error")
    try:
        r = httpx.get(f"{s.url}/health")
        assert r.status_code == 500 and "model not loaded" in r.json()["error"]["message"]
        assert httpx.post(f"{s.url}/infill", json={}).status_code == 503
    finally:
        s.close()


def test_cli_refuses_a_public_address_without_a_key_and_reports_loading_then_ok(sharp_dir) -> None:
    cmd = [sys.executable, "-m", "coda_lsp.cli", "serve", "--model", str(sharp_dir)]
    bad = subprocess.run(cmd + ["--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "API key" in bad.stderr
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(cmd + ["--port", str(port), "--dtype", "float32", "--threads", "1"],
                            stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while "ok" not in seen:
            assert proc.poll() is None, proc.stderr.read()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health")
                seen.append(r.json()["status"])
                assert (r.status_code, seen[-1]) in ((503, "loading"), (200, "ok"))
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.post(f"http://127.0.0.1:{port}/infill", json={"input_prefix": PREFIX, "n_predict": 2}, timeout=60)
        assert r.status_code == 200 and "content" in r.json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "loading" in seen


def test_stop_strings_and_t_max_predict_ms_cut_the_answer(server) -> None:
    whole = infill(server, n_predict=8).json()["content"]
    assert whole, "the peaked tiny model filled nothing"
    word = whole[-1]
    cut = infill(server, n_predict=8, stop=[word]).json()
    assert cut["content"] == whole[:whole.index(word)] and cut["stop_type"] == "word" and cut["stopping_word"] == word
    # a 1 ms budget is over after the first step: the answer is the finished lines of what had settled
    timed = infill(server, n_predict=8, t_max_predict_ms=1, decode={"steps": 8, "threshold": None}).json()
    assert timed["stop_type"] == "limit" and timed["timings"]["steps"] == 1
    assert timed["content"] == "" or timed["content"].endswith("\n")


def test_a_request_over_the_servers_time_limit_gets_503_and_the_server_keeps_serving(sharp_dir) -> None:
    s = LiveServer(config(sharp_dir, request_timeout_s=0.001))
    s.wait()
    try:
        r = infill(s, n_predict=8)
        assert r.status_code == 503 and "timed out" in r.json()["error"]["message"]
        assert httpx.get(f"{s.url}/health").json() == {"status": "ok"}
        stream = infill(s, n_predict=8, stream=True)
        assert "event: error" in stream.text and "timed out" in stream.text
    finally:
        s.close()


# ------------------------------------------------------------------------------------------- the gate
def test_serve_gates_like_the_language_server_and_says_so(server) -> None:
    """The same gate and settings as the language server: per request here (the server's defaults are
    the language server's, tests/test_settings.py); a hidden answer is empty content, and `gate` says why."""
    from coda_lsp.gate import GateConfig, apply_gate
    from coda_lsp.gate import Candidate as Pieces
    raw = infill(server, n_predict=8).json()
    assert raw["gate"] == "off" and "".join(t for t, _ in raw["confidences"]) == raw["content"]
    confs = sorted({p for _, p in raw["confidences"]})
    assert confs, raw
    for mc, ms in [(confs[-1], 0.0), (confs[0] + 1e-6, 0.0), (0.0, 1.0), (0.0, 1e-6)]:
        body = infill(server, n_predict=8, min_confidence=mc, min_shown_confidence=ms).json()
        local = apply_gate(Pieces.of(raw["confidences"]), GateConfig(mc, ms))   # the language server's gate
        if local is None:
            assert body["content"] == "" and body["gate"] == "hidden", (mc, ms, body)
        else:
            assert body["content"] == local[0] and body["gate"] == ("cut" if local[1] else "shown"), (mc, ms, body)
    hidden = infill(server, n_predict=8, min_shown_confidence=1.0, stream=True)
    events = [json.loads(d) for name, d in sse_events(hidden.text)]
    assert "".join(e["content"] for e in events) == "" and events[-1]["gate"] == "hidden"


def test_serve_gate_defaults_are_the_language_servers() -> None:
    from coda_lsp.http.config import ServeConfig
    from coda_lsp.http.serve import config_from, parser
    from coda_lsp.options import ServerOptions
    args = parser().parse_args([])
    assert (args.min_confidence, args.min_shown_confidence) == (ServerOptions().min_confidence,
                                                                 ServerOptions().min_shown_confidence)
    assert config_from(args, {}).gate == ServerOptions().gate == ServeConfig().gate
