"""The remote-engine client (`RemoteJob`) against a real `coda-lsp serve` app and against broken remotes."""

from __future__ import annotations

import socket
import threading

import pytest

from dataclasses import replace

from coda_model.decode_config import DecodeConfig

from coda_lsp import pipeline
from coda_lsp.documents import Document
from coda_lsp.http.remote import RemoteEngine, RemoteJob, RemoteUnavailable
from coda_lsp.loading import load_engine
from coda_lsp.options import ServerOptions
from live_http import LiveServer, config, sharp_dir  # noqa: F401  (fixture)

SRC = "import os\n\n\ndef total(xs):\n    s = 0\n    for x in xs:\n        \n    return s\n"


@pytest.fixture(scope="module")
def server(sharp_dir):
    s = LiveServer(config(sharp_dir, max_hole=64))
    s.wait()
    yield s
    s.close()


OPTIONS = ServerOptions(device="cpu", dtype="float32", threads=1,
                        decode=replace(DecodeConfig.editor(), steps=6, block_length=4))


def request(num_candidates: int = 1) -> pipeline.InferRequest:
    doc = Document("file:///w/total.py", SRC, 1, "python")
    ctx = pipeline.build_context(doc, SRC.index("        \n") + 8, None, OPTIONS)
    return pipeline.infer_request(ctx, OPTIONS, num_candidates)


def drain(job) -> list[tuple]:
    steps = []
    while not job.done:
        steps.append(job.step())
    return steps


def test_a_remote_job_gives_what_the_local_job_gives(server, sharp_dir) -> None:
    lm = load_engine(replace(OPTIONS, model_path=str(sharp_dir)))
    for candidates in (1, 2):
        local = pipeline.infer(lm, request(candidates))
        local_steps = drain(local)
        remote = RemoteJob(RemoteEngine(server.url), request(candidates))
        remote_steps = drain(remote)
        assert remote.texts() == local.texts()
        assert remote_steps[-1][4] and remote.num_steps == local.num_steps
        if candidates == 1:   # step by step the same partial states (text, step, steps, masked, done)
            assert remote_steps == local_steps


def test_while_it_streams_a_remote_hole_offers_the_prefix_a_local_one_does(server, sharp_dir) -> None:
    """Tab while streaming takes the settled text cut by minConfidence: the same remote as local."""
    from coda_lsp.gate import GateConfig
    lm = load_engine(replace(OPTIONS, model_path=str(sharp_dir)))
    local, remote = pipeline.infer(lm, request()), RemoteJob(RemoteEngine(server.url), request())
    gates = [GateConfig(), GateConfig(0.5, 0.0), GateConfig(0.99, 0.0)]
    seen = []
    while not local.done:
        local.step()
        remote.step()
        if not local.done:
            seen.append([local.prefix(g) for g in gates])
            assert [remote.prefix(g) for g in gates] == seen[-1]
    assert any(p[0] for p in seen), seen   # some step had a settled start to offer


def test_the_gate_acts_on_a_remote_completion_exactly_as_on_a_local_one(server, sharp_dir) -> None:
    """The stream carries each token's confidence (`confidences`), so a remote guess is cut or hidden as a
    local one is."""
    from coda_lsp.gate import GateConfig
    lm = load_engine(replace(OPTIONS, model_path=str(sharp_dir)))
    doc = Document("file:///w/total.py", SRC, 1, "python")
    ctx = pipeline.build_context(doc, SRC.index("        \n") + 8, None, OPTIONS)
    local, remote = pipeline.infer(lm, request(2)), RemoteJob(RemoteEngine(server.url), request(2))
    drain(local)
    drain(remote)
    assert remote.candidates() == local.candidates()
    confs = sorted({s.confidence for c in local.candidates() for s in c.spans})
    acted = 0
    for gate in [GateConfig()] + [GateConfig(c, 0.0) for c in confs] + [GateConfig(0.0, c) for c in confs]:
        shown = pipeline.postprocess(remote.candidates(), ctx, gate)
        assert shown == pipeline.postprocess(local.candidates(), ctx, gate), gate
        acted += shown != pipeline.postprocess(remote.candidates(), ctx, GateConfig())
    assert acted > 0   # some setting cut or hid the remote text


def test_a_remote_that_is_down_raises_one_line(server) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    job = RemoteJob(RemoteEngine(f"http://127.0.0.1:{port}"), request())
    with pytest.raises(RemoteUnavailable, match="not reachable") as info:
        job.step()
    assert "\n" not in str(info.value)


class RawServer:
    """A TCP server that answers every connection with `reply` (None: accept and say nothing)."""

    def __init__(self, reply) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.reply, self.conns = reply, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.recv(65536)
            if self.reply is not None:
                conn.sendall(self.reply)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("reply,needle", [
    (None, "did not answer within"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello", "garbage"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: denoise\ndata: {oops\n\n", "garbage"),
    (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", "closed the (stream|connection)"),
    (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 62\r\n\r\n"
     b'{"error":{"code":503,"message":"Loading model","type":"x"}}   ', "HTTP 503: Loading model"),
], ids=["slow", "not-sse", "bad-json", "empty", "loading"])
def test_slow_or_garbage_remotes_raise_one_line(reply, needle) -> None:
    raw = RawServer(reply)
    try:
        job = RemoteJob(RemoteEngine(raw.url, read_s=0.5), request())
        with pytest.raises(RemoteUnavailable, match=needle) as info:
            drain(job)
        assert "\n" not in str(info.value)
    finally:
        raw.close()


def test_a_wrong_api_key_is_reported(sharp_dir) -> None:
    s = LiveServer(config(sharp_dir, api_key="k1"))
    s.wait()
    try:
        with pytest.raises(RemoteUnavailable, match="HTTP 401"):
            drain(RemoteJob(RemoteEngine(s.url, api_key="k2"), request()))
        assert drain(RemoteJob(RemoteEngine(s.url, api_key="k1"), request()))[-1][4]
    finally:
        s.close()
