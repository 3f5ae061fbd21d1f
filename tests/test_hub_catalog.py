"""Models from where users keep them: repo ids from the Hugging Face cache, and `coda-lsp models`.

The fake cache is laid out as huggingface_hub writes it (models--org--name/{blobs,refs,snapshots},
snapshot files symlinked to content-addressed blobs, refs/main naming the commit), and
huggingface_hub's own `scan_cache_dir` must accept it before any test relies on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coda_model import ModelLoadError
from coda_model.catalog import scan_folders, scan_hf_cache
from coda_model.hub import resolve_model_ref
from coda_model.testing import write_random_family_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_fake_cache(cache: Path, repo_id: str, model_dir: Path, commit: str = COMMIT) -> Path:
    """Put `model_dir`'s files into `cache` the way `hf download repo_id` leaves them; returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(model_dir.iterdir()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            os.link(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory, tiny_model_dir) -> Path:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    add_to_fake_cache(cache, "Salesforce/CoDA-v0-Instruct", tiny_model_dir)
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)  # huggingface_hub itself reads our layout
    assert [r.repo_id for r in info.repos] == ["Salesforce/CoDA-v0-Instruct"] and not info.warnings
    return cache


def test_repo_id_resolves_to_its_cached_snapshot(fake_cache):
    path = resolve_model_ref("Salesforce/CoDA-v0-Instruct", cache_dir=fake_cache)
    assert path == fake_cache / "models--Salesforce--CoDA-v0-Instruct" / "snapshots" / COMMIT
    assert resolve_model_ref(f"Salesforce/CoDA-v0-Instruct@{COMMIT}", cache_dir=fake_cache) == path


def test_missing_repo_id_names_the_download_command(fake_cache):
    with pytest.raises(ModelLoadError, match=r"nor in the Hugging Face cache .*`hf download Dream-org/Dream-Coder-v0-Instruct-7B") as info:
        resolve_model_ref("Dream-org/Dream-Coder-v0-Instruct-7B", cache_dir=fake_cache)
    assert "\n" not in str(info.value)


def test_a_path_that_is_not_a_repo_id_says_the_directory_does_not_exist(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_ref(str(tmp_path / "nope"))


def _run(args, env_extra, cwd):
    env = {**os.environ, **env_extra}
    if "HF_HOME" in env_extra:  # HF_HUB_CACHE would win over HF_HOME
        env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "coda_lsp", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


@pytest.mark.parametrize("via", ["HF_HUB_CACHE", "HF_HOME"])
def test_coda_lsp_complete_takes_a_repo_id_from_the_cache(fake_cache, tmp_path, via):
    src = tmp_path / "f.py"
    src.write_text("def add(a, b):\n    return \n")
    env = {"HF_HUB_CACHE": str(fake_cache)} if via == "HF_HUB_CACHE" else {"HF_HOME": str(fake_cache.parent)}
    out = _run(["complete", f"{src}:2:12", "--model", "Salesforce/CoDA-v0-Instruct", "--steps", "4",
                "--max-tokens", "8", "--device", "cpu"], env, tmp_path)
    assert "loaded in" in out.stderr and "decoded in" in out.stderr, out.stderr
    assert out.returncode in (0, 1)


def test_coda_lsp_complete_with_an_uncached_repo_id_is_one_line(fake_cache, tmp_path):
    src = tmp_path / "f.py"
    src.write_text("x = 1\n")
    out = _run(["complete", f"{src}:1:5", "--model", "GSAI-ML/LLaDA-8B-Instruct"], {"HF_HUB_CACHE": str(fake_cache)}, tmp_path)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("coda-lsp complete:")]
    assert len(errors) == 1 and "hf download GSAI-ML/LLaDA-8B-Instruct" in errors[0]


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory, tiny_model_dir, coda_v0_dir) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model_dir, folder / "coda-tiny", copy_function=os.link)
    write_random_family_dir(folder / "dream-tiny", coda_v0_dir, "dream", seed=3)
    write_random_family_dir(folder / "nested" / "llada-tiny", coda_v0_dir, "llada", seed=4)
    # junk: an AR checkpoint, a config without weights, a vision config, stray files, an empty folder
    ar = folder / "qwen3-ar"
    shutil.copytree(tiny_model_dir, ar, copy_function=os.link)
    data = json.loads((ar / "config.json").read_text())
    data.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"])
    (ar / "config.json").unlink()
    (ar / "config.json").write_text(json.dumps(data))
    (folder / "no-weights").mkdir()
    (folder / "no-weights" / "config.json").write_text(json.dumps({"model_type": "Dream"}))
    (folder / "vision").mkdir()
    (folder / "vision" / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {}}))
    (folder / "notes.txt").write_text("not a model")
    (folder / "empty").mkdir()
    return folder


def test_scan_finds_one_model_of_each_family_and_skips_junk(models_folder):
    entries = {e.path.name: e for e in scan_folders([models_folder])}
    assert sorted(entries) == ["coda-tiny", "dream-tiny", "llada-tiny"]
    assert [entries[n].family for n in ("coda-tiny", "dream-tiny", "llada-tiny")] == ["CoDA", "Dream", "LLaDA"]
    from coda_model.checkpoint import load_model

    for entry in entries.values():  # the counts come from headers; the loaded model must agree
        model = load_model(entry.path, device="cpu", dtype="float32").model
        n = sum(p.numel() for p in model.parameters())
        assert entry.num_parameters == n, entry
        assert entry.dtype == "float32" and entry.size_bytes > n * 4


def test_coda_lsp_models_lists_cache_and_folders(models_folder, fake_cache, tmp_path):
    out = _run(["models", str(models_folder)], {"HF_HUB_CACHE": str(fake_cache)}, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["MODEL", "FAMILY", "PARAMS", "DTYPE", "SIZE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == ["Salesforce/CoDA-v0-Instruct", "coda-tiny", "dream-tiny", "llada-tiny"]
    assert [rows[n][1] for n in ("Salesforce/CoDA-v0-Instruct", "dream-tiny", "llada-tiny")] == ["CoDA", "Dream", "LLaDA"]
    assert scan_hf_cache(fake_cache)[0].name == "Salesforce/CoDA-v0-Instruct"


def test_coda_lsp_models_with_nothing_found_says_how_to_get_one(tmp_path):
    out = _run(["models", "--no-cache", str(tmp_path)], {}, tmp_path)
    assert out.returncode == 1 and "hf download" in out.stderr and not out.stdout


def test_server_model_path_setting_takes_a_repo_id(fake_cache, monkeypatch):
    """`initializationOptions.modelPath` goes through the same resolver as --model."""
    from huggingface_hub import constants

    from coda_lsp.loading import ModelUnavailable, resolve_model_path

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_cache))
    assert resolve_model_path("Salesforce/CoDA-v0-Instruct").parent.parent.name == "models--Salesforce--CoDA-v0-Instruct"
    with pytest.raises(ModelUnavailable, match=r"hf download apple/DiffuCoder-7B-cpGRPO.*modelPath"):
        resolve_model_path("apple/DiffuCoder-7B-cpGRPO")


def test_resolver_and_catalog_do_not_import_torch():
    code = ("import sys, coda_model.hub, coda_model.catalog, coda_model.families, coda_lsp.models_cmd; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
