"""Loading and saving CoDA directories: round trips, real key names, and one clear error per bad directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from coda_model.checkpoint import INDEX_NAME, load_model, save_model
from coda_model.errors import ModelLoadError


def test_fixture_is_sharded_with_real_key_names(tiny_model_dir: Path):
    index = json.loads((tiny_model_dir / INDEX_NAME).read_text())
    files = set(index["weight_map"].values())
    assert len(files) >= 2
    assert "model.layers.0.self_attn.q_norm.weight" in index["weight_map"]
    assert "lm_head.weight" in index["weight_map"] and "model.embed_tokens.weight" in index["weight_map"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["mask_token_id"] == 151669 and config["vocab_size"] == 151936
    assert config["sampling_eps"] == [0.001, 0.25, 0.5, 0.25, 0.001]  # training-only fields survive


def test_save_load_round_trip_is_bit_exact(tiny_model_dir: Path, tmp_path: Path):
    first = load_model(tiny_model_dir, device="cpu", dtype="float32")
    save_model(first.model, tmp_path / "copy", tokenizer=first.tokenizer, max_shard_bytes=20_000_000)
    second = load_model(tmp_path / "copy", device="cpu", dtype="float32")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.config.to_dict() == first.config.to_dict() | {"torch_dtype": "float32"}
    assert second.tokenizer.encode("def f(x): return x") == first.tokenizer.encode("def f(x): return x")


def test_single_file_and_bf16_load(tiny_model_dir: Path, tmp_path: Path):
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    save_model(loaded.model, tmp_path / "one", tokenizer=loaded.tokenizer, dtype=torch.bfloat16)
    assert (tmp_path / "one" / "model.safetensors").is_file() and not (tmp_path / "one" / INDEX_NAME).exists()
    again = load_model(tmp_path / "one", device="cpu", dtype="bfloat16")
    assert next(again.model.parameters()).dtype == torch.bfloat16
    assert json.loads((tmp_path / "one" / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_fp16_on_cpu_is_refused(tiny_model_dir: Path):
    with pytest.raises(ModelLoadError, match="float16 on CPU"):
        load_model(tiny_model_dir, device="cpu", dtype="float16")


@pytest.fixture()
def broken(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny model directory to damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))


def _shards(path: Path) -> list[Path]:
    return sorted(path.glob("model-*.safetensors"))


def test_missing_directory_names_the_flag(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"does not exist: pass --model"):
        load_model(tmp_path / "nope")


def test_missing_config(broken: Path):
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"config.json is missing"):
        load_model(broken)


def test_invalid_config_json(broken: Path):
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match=r"config.json is not valid JSON"):
        load_model(broken)


def test_config_without_model_fields(broken: Path):
    (broken / "config.json").write_text(json.dumps({"model_type": "CoDA"}))
    with pytest.raises(ModelLoadError, match=r"lacks vocab_size"):
        load_model(broken)


def test_missing_shard(broken: Path):
    _shards(broken)[-1].unlink()
    with pytest.raises(ModelLoadError, match=r"shard model-0000\d-of-0000\d.safetensors listed in .* is missing"):
        load_model(broken)


def test_truncated_shard(broken: Path):
    shard = _shards(broken)[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"not a readable safetensors file"):
        load_model(broken)


@pytest.mark.parametrize("edits, error", [
    ({"intermediate_size": 96}, r"mlp.* has shape \[.*\] but config.json implies"),
    # smaller than the tokenizer's 151,670 ids (special ids moved inside the smaller vocabulary)
    ({"vocab_size": 151000, "mask_token_id": 5, "pad_token_id": 5, "eos_token_id": 5, "bos_token_id": 5},
     r"tokenizer has 151670 ids but config.json vocab_size is 151000"),
    ({"vocab_size": 152000}, r"vocab_size in config.json does not match the embedding rows"),
], ids=["shape-mismatch", "vocab-smaller-than-tokenizer", "embedding-rows-disagree"])
def test_config_disagrees_with_checkpoint(broken: Path, edits: dict, error: str):
    cfg = json.loads((broken / "config.json").read_text())
    cfg.update(edits)
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=error):
        load_model(broken)


def test_pickle_only_checkpoint_is_refused(broken: Path):
    for f in broken.glob("*.safetensors"):
        f.unlink()
    (broken / INDEX_NAME).unlink()
    torch.save({"x": torch.zeros(1)}, broken / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pickle .* refused: convert it to safetensors"):
        load_model(broken)


def test_tokenizer_without_mask_token(broken: Path, tmp_path: Path):
    tok = json.loads((broken / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|mask|>"]
    (broken / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((broken / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"].pop("151669")
    (broken / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"no mask token"):
        load_model(broken)


def test_no_weights_at_all(broken: Path):
    for f in broken.glob("*.safetensors"):
        f.unlink()
    (broken / INDEX_NAME).unlink()
    with pytest.raises(ModelLoadError, match=r"has no weights"):
        load_model(broken)


def test_missing_tensor(broken: Path):
    """A lone model.safetensors without lm_head is reported by name."""
    loaded = load_model(broken, device="cpu", dtype="float32")
    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items() if k != "lm_head.weight"}
    for f in broken.glob("*.safetensors"):
        f.unlink()
    (broken / INDEX_NAME).unlink()
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"lacks 1 tensors \(first: lm_head.weight\)"):
        load_model(broken)
