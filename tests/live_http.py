"""Helpers for the HTTP tests: a live `coda-lsp serve` app on a loopback port, and a peaked tiny model."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from coda_model.checkpoint import save_model
from coda_model.decode_config import DecodeConfig
from coda_model.testing import load_sharp, write_random_coda_dir

from coda_lsp.http.app import build_app
from coda_lsp.http.config import ServeConfig
from coda_lsp.http.worker import BatchWorker


class LiveServer:
    """`build_app` served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.worker = BatchWorker(cfg)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(cfg, self.worker), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()

    def wait(self, status: str = "ok") -> None:
        for _ in range(1200):
            try:
                if httpx.get(f"{self.url}/health").json().get("status") == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server never reported {status}")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory, coda_v0_dir) -> Path:
    """The tiny random CoDA model with its head scaled up: peaked distributions, so greedy decodes have
    no near-ties that float noise from batching could flip."""
    out = write_random_coda_dir(tmp_path_factory.mktemp("sharp-coda"), coda_v0_dir, seed=0, num_shards=1)
    save_model(load_sharp(out).model, out, dtype=torch.float32)
    return out


def config(model: Path, **kw) -> ServeConfig:
    """A fast server config for tests: the editor decode with 4 steps in blocks of 4, holes of <= 8 tokens,
    the confidence gate off (random weights are unsure of every token; the gate's own tests turn it on)."""
    kw = {"max_hole": 8, "batch_window_ms": 30, "max_batch": 8, "min_confidence": 0.0, "min_shown_confidence": 0.0,
          **kw}
    return replace(ServeConfig(), model_path=str(model), device="cpu", dtype="float32", threads=1,
                   decode=replace(DecodeConfig.editor(), steps=4, block_length=4), **kw)
