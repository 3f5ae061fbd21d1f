"""The embedded default model (`coda_model/default_model/`): it ships, loads and infills.

These run on the real shipped weights (a few MB, bf16), so they also catch a broken export: mismatched
special-token ids, a vocabulary the tokenizer cannot fill, an oversized file, or a model that cannot
produce any text.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from coda_model.checkpoint import load_model
from coda_model.tokenizer import build_bpe_from_vocab_merges
from coda_train.tokenizer_train import train_tokenizer

MAX_SHIPPED_MB = 30


@pytest.fixture(scope="module")
def default_dir() -> Path:
    path = Path(str(resources.files("coda_model") / "default_model"))
    assert (path / "config.json").is_file(), f"{path} has no config.json: run bash train/recipes/default_model/run.sh"
    return path


@pytest.fixture(scope="module")
def loaded(default_dir: Path):
    return load_model(default_dir, device="cpu", dtype="auto")


def test_default_model_ships_as_package_data(default_dir: Path) -> None:
    names = {p.name for p in default_dir.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    assert {"MODEL_CARD.md", "DATA_CARD.md"} <= names


def test_default_model_is_small_bf16(default_dir: Path, loaded) -> None:
    weights = sum(p.stat().st_size for p in default_dir.glob("*.safetensors"))
    assert weights <= MAX_SHIPPED_MB * 2**20, f"{weights / 2**20:.1f} MB shipped"
    assert json.loads((default_dir / "config.json").read_text())["torch_dtype"] == "bfloat16"
    from safetensors import safe_open
    for file in default_dir.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    # 'auto' loads it in the float kernel measured fastest on this CPU (coda_model.kernels)
    assert {p.dtype for p in loaded.model.parameters()} == {loaded.kernel.kernel.dtype}


def test_default_model_ids_match_its_tokenizer(loaded) -> None:
    cfg, tok = loaded.config, loaded.tokenizer
    assert cfg.mask_token_id == tok.mask_id == tok.token_to_id("<|mask|>")
    assert cfg.pad_token_id == tok.pad_id == tok.token_to_id("<|endoftext|>")
    assert cfg.eos_token_id == tok.eos_id == tok.token_to_id("<|im_end|>")
    assert tok.vocab_size <= cfg.vocab_size
    assert loaded.model.lm_head.out_features == cfg.vocab_size == loaded.model.model.embed_tokens.num_embeddings
    assert all(i is not None for i in tok.fim_ids.values())


def test_default_model_round_trips_python_through_its_tokenizer(loaded) -> None:
    src = "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)\n"
    ids = loaded.tokenizer.encode(src)
    assert loaded.tokenizer.decode(ids) == src
    assert len(ids) < len(src) / 2.5  # a code BPE, not bytes


def test_default_model_predicts_code_better_than_chance(loaded) -> None:
    """Masked-token loss on a short snippet is clearly below the uniform log(vocab) (a broken export is not)."""
    tok, model = loaded.tokenizer, loaded.model
    src = ("import os\n\n\ndef list_python_files(root):\n    out = []\n    for name in os.listdir(root):\n"
           "        if name.endswith('.py'):\n            out.append(os.path.join(root, name))\n    return out\n")
    ids = torch.tensor([tok.encode(src)])
    gen = torch.Generator().manual_seed(0)
    masked = torch.rand(ids.shape, generator=gen) < 0.3
    masked[:, 0] = False
    noisy = ids.masked_fill(masked, tok.mask_id)
    with torch.inference_mode():
        logits = model(noisy).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1][masked[0, 1:]], ids[0, 1:][masked[0, 1:]])
    assert loss.item() < math.log(loaded.config.vocab_size) - 1.0


def test_default_model_infills_a_python_hole(loaded) -> None:
    from coda_model.engine import DecodeConfig, Engine

    tok = loaded.tokenizer
    prefix = "def add(a, b):\n    "
    suffix = "\n\n\nprint(add(1, 2))\n"
    engine = Engine(loaded)
    states = list(engine.infill(tok.encode(prefix), tok.encode(suffix), length=16,
                                config=DecodeConfig(steps=16, alg="entropy", seed=0)))
    assert states and states[-1].done and not states[-1].masked.any()
    text = engine.hole_text(states[-1])
    assert text.strip(), "the default model produced an empty hole"


def _recipe_module(name: str):
    """One of the recipe's scripts (not a package module), imported from its path."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "train" / "recipes" / "default_model" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_data_card_sources_name_every_package_the_shipped_model_used(default_dir: Path, tmp_path: Path) -> None:
    build_data = _recipe_module("build_data")
    card = default_dir / "DATA_CARD.md"
    names = build_data.card_sources(card)
    table = card.read_text(encoding="utf-8").split("| source |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("| ")]
    assert len(names) == len(rows) == 1 + 134 + 123  # stdlib, Python distributions, npm packages (the card's counts)
    assert {"stdlib", "flask", "click", "npm:semver"} <= names  # held-out packages are sources too
    assert not {"tqdm", "scipy", "npm:tar"} & names  # the rejected-licenses table that follows is not
    assert not any("|" in n or n in ("source", "---") for n in names)
    (tmp_path / "notes.md").write_text("# a card without the table\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no per-source table"):
        build_data.card_sources(tmp_path / "notes.md")


def test_paired_bootstrap_interval_separates_a_real_difference_from_noise() -> None:
    table = _recipe_module("results_table")
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 200)
    assert table.paired_bootstrap(list(base), list(base)) == (0.0, 0.0, 0.0)
    mean, lo, hi = table.paired_bootstrap(list(base + 0.05 + rng.normal(0, 0.05, 200)), list(base))
    assert 0 < lo < mean < hi and abs(mean - 0.05) < 0.02  # a consistent +0.05 excludes 0
    mean, lo, hi = table.paired_bootstrap(list(base + rng.normal(0, 0.2, 200)), list(base))
    assert lo < 0 < hi  # zero-mean noise does not
    with pytest.raises(ValueError, match="same non-zero number"):
        table.paired_bootstrap([0.1, 0.2], [0.1])


def test_paired_scores_align_problems_by_task_id() -> None:
    table = _recipe_module("results_table")
    x = {"scores": [{"task_id": "a", "edit_similarity": 0.1}, {"task_id": "b", "edit_similarity": 0.2},
                    {"task_id": "c", "edit_similarity": 0.3}]}
    y = {"scores": [{"task_id": "c", "edit_similarity": 0.9}, {"task_id": "a", "edit_similarity": 0.7}]}
    assert table.paired_scores(x, y) == ([0.1, 0.3], [0.7, 0.9])
    assert table.paired_scores(x, {}) == ([], [])  # a run written before per-problem scores existed


def _text_pipeline(tok: Tokenizer) -> dict:
    """What `with_qwen2_text_pipeline` sets, as tokenizers serialises it."""
    data = json.loads(tok.to_str())
    return {k: data[k] for k in ("normalizer", "pre_tokenizer", "decoder")}


def test_loaded_and_trained_tokenizers_cut_text_as_the_shipped_one(default_dir: Path, coda_v0_dir: Path) -> None:
    """One text-pipeline definition serves loading vocab.json + merges.txt and both trainers; the shipped
    tokenizer.json was written by the recipe before that definition existed, so it pins the old form."""
    shipped = Tokenizer.from_file(str(default_dir / "tokenizer.json"))
    code = 'def fib(n: int) -> int:\n\t"""naïve 😀 中文"""\r\n    return n if n < 2 else fib(n - 1)  # x\n\n\n'
    candidates = {
        "vocab+merges": build_bpe_from_vocab_merges(coda_v0_dir / "vocab.json", coda_v0_dir / "merges.txt"),
        "coda-train tokenizer": train_tokenizer([code * 4], vocab_size=300).tok,
        "recipe train_bpe": _recipe_module("train_tokenizer").train_bpe([code * 4], 300),
    }
    for name, tok in candidates.items():
        assert _text_pipeline(tok) == _text_pipeline(shipped), name
        assert tok.pre_tokenizer.pre_tokenize_str(code) == shipped.pre_tokenizer.pre_tokenize_str(code), name
        assert tok.normalizer.normalize_str("e\u0301") == shipped.normalizer.normalize_str("e\u0301") == "\u00e9", name
