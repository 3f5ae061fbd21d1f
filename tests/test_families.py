"""Other diffusion families load unchanged: Dream (Qwen2.5 blocks) and LLaDA (LLaMA blocks, OLMo names).

Parity: random weights written in each family's published layout load through `load_model` and, run
with the causal mask, equal transformers' Qwen2 / Llama on the same weights. The tensor-name table
below is LLaDA's, copied from its modelling code (modeling_llada.py: LLaDALlamaBlock, LLaDAModel), not
from our adapter, so the two are checked against each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coda_model import ModelLoadError
from coda_model.checkpoint import load_model
from coda_model.families import detect_family
from coda_model.testing import write_random_family_dir

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]
VOCAB = 151936

LLADA_TO_LLAMA = {"model.transformer.wte.weight": "model.embed_tokens.weight",
                  "model.transformer.ln_f.weight": "model.norm.weight",
                  "model.transformer.ff_out.weight": "lm_head.weight"}
LLADA_BLOCK = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm", "q_proj": "self_attn.q_proj",
               "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
               "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}


def llada_to_llama(name: str) -> str:
    if name in LLADA_TO_LLAMA:
        return LLADA_TO_LLAMA[name]
    _, _, _, i, module, leaf = name.split(".")  # model.transformer.blocks.{i}.{module}.{leaf}
    return f"model.layers.{i}.{LLADA_BLOCK[module]}.{leaf}"


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory, coda_v0_dir) -> Path:
    return write_random_family_dir(tmp_path_factory.mktemp("dream"), coda_v0_dir, "dream", seed=1)


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory, coda_v0_dir) -> Path:
    path = write_random_family_dir(tmp_path_factory.mktemp("llada"), coda_v0_dir, "llada", seed=2)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # LLaDA's files name no mask token
        data = json.loads((path / name).read_text())
        data.pop("mask_token", None)
        (path / name).write_text(json.dumps(data))
    return path


def _hf_twin(family: str, cfg: dict):
    if family == "dream":
        hf_cfg = transformers.Qwen2Config(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"], rope_theta=cfg["rope_theta"], rms_norm_eps=cfg["rms_norm_eps"],
            max_position_embeddings=cfg["max_position_embeddings"], tie_word_embeddings=False, use_sliding_window=False,
            attn_implementation="eager")
        return transformers.Qwen2ForCausalLM(hf_cfg).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg["embedding_size"], hidden_size=cfg["d_model"], intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
        rope_theta=cfg["rope_theta"], rms_norm_eps=cfg["rms_norm_eps"], max_position_embeddings=cfg["max_sequence_length"],
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attn_implementation="eager")
    return transformers.LlamaForCausalLM(hf_cfg).eval()


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_causal_forward_of_a_family_checkpoint_matches_transformers(family, dream_dir, llada_dir):
    path = {"dream": dream_dir, "llada": llada_dir}[family]
    cfg = json.loads((path / "config.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    if family == "llada":
        weights = {llada_to_llama(k): v for k, v in weights.items()}
    hf = _hf_twin(family, cfg)
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    assert not missing and not unexpected
    ours = load_model(path, device="cpu", dtype="float32").model
    ids = torch.randint(0, VOCAB, (2, 29), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        got = ours(ids, causal=True).logits
    assert (ref - got).abs().max().item() <= 1e-5


def test_dream_layout_has_qkv_biases_and_no_qk_norm(dream_dir):
    names = set(load_file(str(dream_dir / "model.safetensors")))
    assert "model.layers.0.self_attn.q_proj.bias" in names and "model.layers.0.self_attn.o_proj.bias" not in names
    assert not any("q_norm" in n or "k_norm" in n for n in names)
    cfg = load_model(dream_dir, device="cpu", dtype="float32").config
    assert (cfg.family, cfg.logit_shift, cfg.qkv_bias, cfg.qk_norm) == ("dream", True, True, False)


def test_llada_loads_with_its_mask_id_from_config_and_no_logit_shift(llada_dir):
    loaded = load_model(llada_dir, device="cpu", dtype="float32")
    assert loaded.config.family == "llada" and loaded.config.logit_shift is False
    assert loaded.tokenizer.mask_id == loaded.config.mask_token_id == 151669


def test_llada_hole_is_read_at_its_own_position(llada_dir):
    """With no shift, the engine's logits for a masked position are the model's output at that position."""
    from coda_model.engine import DecodeConfig, Engine

    loaded = load_model(llada_dir, device="cpu", dtype="float32")
    engine = Engine(loaded)
    prefix = loaded.tokenizer.encode("def add(a, b):\n    return")
    state = list(engine.infill(prefix, [], length=1, config=DecodeConfig(steps=1, temperature=0.0)))[-1]
    x = torch.tensor([prefix + [loaded.config.mask_token_id]])
    with torch.no_grad():
        logits = loaded.model(x).logits[0]
    assert int(state.tokens[0, 0]) == int(logits[len(prefix)].argmax())


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_coda_lsp_complete_runs_a_family_model(family, dream_dir, llada_dir, tmp_path):
    path = {"dream": dream_dir, "llada": llada_dir}[family]
    src = tmp_path / "f.py"
    src.write_text("def add(a, b):\n    return \n")
    out = subprocess.run([sys.executable, "-m", "coda_lsp", "complete", f"{src}:2:12", "--model", str(path),
                          "--device", "cpu", "--dtype", "float32", "--steps", "4", "--max-tokens", "8"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "loaded in" in out.stderr, out.stderr
    assert out.returncode in (0, 1), out.stderr  # 1 = the random model produced nothing usable; it still decoded
    assert "decoded in" in out.stderr


# --- the wrong model: one line naming what it is and what to do --------------------------------------------
WRONG = [
    ({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 10}, r"autoregressive Qwen3.*coda-train adapt"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, r"autoregressive model \(model_type 'llama'.*no mask token"),
    ({"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], "vision_config": {}},
     r"vision / multimodal model"),
    ({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}, r"vision / multimodal model"),
    ({"model_type": "sdar", "architectures": ["SDARForCausalLM"], "mask_token_id": 151669},
     r"diffusion model of a family coda-lsp does not support .*supported: CoDA, Dream"),
    ({"model_type": "llada_moe", "architectures": ["LLaDAMoEModelLM"]}, r"diffusion model of a family"),
    ({"model_type": "llada", "block_type": "sequential", "d_model": 8, "n_layers": 1, "n_heads": 1}, r"block_type='sequential'"),
]


@pytest.mark.parametrize("data,message", WRONG, ids=[w[0]["model_type"] for w in WRONG])
def test_wrong_model_gets_one_line_naming_it(data, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        detect_family(data).to_config(data)
    assert "\n" not in str(info.value)


def test_coda_lsp_complete_on_an_ar_checkpoint_says_adapt(tmp_path, coda_v0_dir):
    model = tmp_path / "qwen3"
    model.mkdir()
    data = json.loads((coda_v0_dir / "config.json").read_text())
    data.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"])
    data.pop("mask_token_id")
    (model / "config.json").write_text(json.dumps(data))
    src = tmp_path / "f.py"
    src.write_text("x = 1\n")
    out = subprocess.run([sys.executable, "-m", "coda_lsp", "complete", f"{src}:1:5", "--model", str(model)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("coda-lsp complete:")]
    assert len(errors) == 1 and "coda-train adapt" in errors[0]


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_saving_a_family_model_is_refused_in_one_line_and_writes_nothing(family, dream_dir, llada_dir, tmp_path):
    from coda_model.checkpoint import save_model
    from coda_model.errors import ModelSaveError
    loaded = load_model({"dream": dream_dir, "llada": llada_dir}[family], device="cpu", dtype="float32")
    with pytest.raises(ModelSaveError, match=f"cannot save a {family} model") as info:
        save_model(loaded.model, tmp_path / "out", tokenizer=loaded.tokenizer)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
