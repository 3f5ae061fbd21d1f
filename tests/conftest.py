"""Shared fixtures: tiny random-weight CoDA directories built from the real CoDA config and tokenizer."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads during tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# servers started by tests keep their acceptance statistics (platformdirs' user state dir) out of ~
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="coda-test-state-")
# ... one thread each (what a busy 2-core machine measures anyway): the server, the one-shot CLI and the
# engine in this process must decode alike, and a measured thread count could differ between them
os.environ.setdefault("OMP_NUM_THREADS", "1")
# ... and their load-time kernel measurements (coda_model.kernels) out of the user's cache
os.environ["CODA_KERNEL_CACHE"] = str(Path(tempfile.mkdtemp(prefix="coda-test-kernels-")) / "kernels.json")

from coda_model.testing import find_shared_coda_dir, write_random_coda_dir

# tests/xla need torch_xla, which lives in its own environment (.venv-xla, torch 2.9): they are collected
# there by scripts/test_xla.sh (run by .ci/run), never skipped here.
collect_ignore = [] if importlib.util.find_spec("torch_xla") else ["xla"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def coda_v0_dir() -> Path:
    path = find_shared_coda_dir(REPO)
    if path is None:
        pytest.fail("shared/coda-v0 not found beside the checkout: clone the repo next to ../shared")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, coda_v0_dir) -> Path:
    """A 2-layer random CoDA model with the real 151,936-row vocab, saved as 2 safetensors shards."""
    return write_random_coda_dir(tmp_path_factory.mktemp("tiny-coda"), coda_v0_dir, seed=0, num_shards=2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module that asks for it: the CPU is shared, and OpenMP threads spinning
    at barriers on an oversubscribed machine made forwards many times slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
