"""adapt: an autoregressive Qwen3 checkpoint becomes a CoDA model with the same weights and a mask row."""

from __future__ import annotations

import json

import pytest
import torch

from coda_model.checkpoint import load_model
from coda_train.adapt import adapt
from coda_train.testing import make_text_shards, make_tokenizer, tiny_config
from coda_train.trainer import Trainer

transformers = pytest.importorskip("transformers")  # in the test extra; CI installs it


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def write_qwen3(out, tok_dir, *, vocab_size: int, tied: bool, with_mask: bool):
    """A real HF Qwen3ForCausalLM directory whose tokenizer may lack <|mask|> (as Qwen3's does)."""
    cfg = transformers.Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   max_position_embeddings=256, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    model.save_pretrained(out)
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    if not with_mask:
        data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|mask|>"]
        data["model"]["vocab"].pop("<|mask|>", None)
    (out / "tokenizer.json").write_text(json.dumps(data))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return model


def test_adapt_keeps_weights_unties_head_and_adds_a_mean_mask_row(tok_dir, tmp_path):
    src = tmp_path / "qwen3"
    hf = write_qwen3(src, tok_dir, vocab_size=511, tied=True, with_mask=False)  # mask id 511 has no row
    out = adapt(src, tmp_path / "coda")
    loaded = load_model(out, device="cpu", dtype="float32")
    m, cfg = loaded.model, loaded.config
    assert cfg.model_type == "CoDA" and cfg.mask_token_id == loaded.tokenizer.mask_id == 511
    assert cfg.vocab_size == 512
    emb = hf.model.embed_tokens.weight
    assert torch.equal(m.model.embed_tokens.weight[:511], emb)
    assert torch.equal(m.lm_head.weight[:511], emb)  # tied -> copied, now a separate tensor
    assert m.lm_head.weight.data_ptr() != m.model.embed_tokens.weight.data_ptr()
    assert torch.allclose(m.model.embed_tokens.weight[511], emb.mean(0))
    ids = torch.randint(0, 500, (1, 12))
    with torch.no_grad():  # same network: run causally it is the AR model
        ours = m(ids, causal=True).logits[..., :511]
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    cfg_json = json.loads((out / "config.json").read_text())
    assert cfg_json["tie_word_embeddings"] is False


def test_adapt_keeps_an_existing_padded_row_for_the_mask_and_the_result_trains(tok_dir, tmp_path):
    src = tmp_path / "qwen3"
    hf = write_qwen3(src, tok_dir, vocab_size=576, tied=False, with_mask=True)  # padded vocab like Qwen3's 151,936
    out = adapt(src, tmp_path / "coda")
    loaded = load_model(out, device="cpu", dtype="float32")
    mask = loaded.config.mask_token_id
    assert loaded.config.vocab_size == 576
    assert torch.equal(loaded.model.model.embed_tokens.weight[mask], hf.model.embed_tokens.weight[mask])
    assert torch.equal(loaded.model.lm_head.weight, hf.lm_head.weight)
    text = make_text_shards(tmp_path / "text", tok_dir)
    cfg = tiny_config(tok_dir, text, tmp_path / "run", model={"init": str(out), "tokenizer": None}, run={"steps": 3})
    trainer = Trainer(cfg, "pretrain", log=lambda *_: None)
    trainer.run()
    from coda_train.export import export

    again = load_model(export(tmp_path / "run", tmp_path / "hf"), device="cpu", dtype="float32")
    assert again.config.vocab_size == 576 and again.config.hidden_size == 32


def test_adapt_refuses_other_architectures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    from coda_model.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Qwen3"):
        adapt(tmp_path, tmp_path / "out")


def test_exported_directory_loads_in_transformers_qwen3_with_an_untied_head(tok_dir, tmp_path):
    text = make_text_shards(tmp_path / "text", tok_dir)
    cfg = tiny_config(tok_dir, text, tmp_path / "run", run={"steps": 2})
    Trainer(cfg, "pretrain", log=lambda *_: None).run()
    from coda_train.export import export

    out = export(tmp_path / "run", tmp_path / "hf")
    hf = transformers.Qwen3ForCausalLM.from_pretrained(out).eval()
    ours = load_model(out, device="cpu", dtype="float32").model
    assert hf.config.tie_word_embeddings is False
    assert not torch.equal(hf.lm_head.weight, hf.model.embed_tokens.weight)
    ids = torch.randint(0, 500, (2, 16))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids, causal=True).logits, atol=1e-5)
