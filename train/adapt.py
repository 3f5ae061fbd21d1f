"""`coda-train adapt`: turn an autoregressive Qwen3-format checkpoint into a CoDA model directory.

Same weights, CoDA config (bidirectional attention is how `coda_model` always runs a CoDA directory), an
untied `lm_head` (a tied Qwen3 checkpoint has none: the embedding is copied, and the two then train
apart, spec 2.5) and a `<|mask|>` token:
- if the tokenizer lacks `<|mask|>` it is added as the next id;
- if that id already has an embedding row (Qwen3 pads its vocabulary to 151,936 rows, and CoDA's mask
  id 151,669 lies inside), the row is kept as it is, as CoDA did (spec 2.7, `--mask-init keep`);
- otherwise the embedding and head grow to the next multiple of 64 rows and the new mask row starts as
  the mean of the existing rows (`--mask-init mean`; `zero` is also available).

    coda-train adapt --from path/to/Qwen3-0.6B --out runs/coda-from-qwen3
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import AddedToken, Tokenizer

from coda_model.checkpoint import save_model, weight_files
from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError
from coda_model.network import CodaLM
from coda_model.tokenizer import CodaTokenizer, build_bpe_from_vocab_merges

MASK = "<|mask|>"
CHAT_EOS = "<|im_end|>"


def _load_tokenizer(path: Path) -> CodaTokenizer:
    """The AR model's tokenizer, with `<|mask|>` added when it has none."""
    try:
        return CodaTokenizer.from_dir(path)
    except ModelLoadError as exc:
        if "mask" not in str(exc):
            raise
    if (path / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:
        tok = build_bpe_from_vocab_merges(path / "vocab.json", path / "merges.txt")
        cfg = json.loads((path / "tokenizer_config.json").read_text()) if (path / "tokenizer_config.json").exists() else {}
        for idx, spec in sorted((int(i), v) for i, v in cfg.get("added_tokens_decoder", {}).items()):
            if tok.token_to_id(spec["content"]) is None:
                tok.add_special_tokens([AddedToken(spec["content"], special=True, normalized=False)])
    tok.add_special_tokens([AddedToken(MASK, special=True, normalized=False)])
    eos = CHAT_EOS if tok.token_to_id(CHAT_EOS) is not None else "<|endoftext|>"
    return CodaTokenizer(tok, mask_token=MASK, pad_token="<|endoftext|>", eos_token=eos)


def adapt(src: str | Path, out: str | Path, *, mask_init: str = "auto", dtype: str = "float32") -> Path:
    """Write a CoDA directory at `out` from the AR checkpoint at `src`; returns `out`."""
    src, out = Path(src), Path(out)
    if not (src / "config.json").is_file():
        raise ModelLoadError(f"{src} has no config.json: pass a Hugging Face Qwen3 (or CoDA) model directory")
    data = json.loads((src / "config.json").read_text())
    if data.get("model_type") not in ("qwen3", "CoDA", None):
        raise ModelLoadError(f"{src} is a {data.get('model_type')!r} model: adapt needs the Qwen3 architecture")
    tok = _load_tokenizer(src)
    files = weight_files(src)
    state = {}
    for file in sorted(set(files.values())):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                state[name] = f.get_tensor(name).float()
    if "lm_head.weight" not in state:  # tied AR checkpoint: the head starts as a copy of the embedding
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    rows = state["model.embed_tokens.weight"].shape[0]
    mask_id = tok.mask_id
    grow = mask_id >= rows
    if mask_init == "auto":
        mask_init = "mean" if grow else "keep"
    if grow and mask_init == "keep":
        raise ValueError(f"the mask id {mask_id} has no embedding row (vocab {rows}): use --mask-init mean or zero")
    vocab = -(-(mask_id + 1) // 64) * 64 if grow else rows
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w = state[key]
        if grow:
            w = torch.cat((w, w.new_zeros(vocab - rows, w.shape[1])))
        if mask_init == "mean":
            w[mask_id] = w[:rows].mean(0)
        elif mask_init == "zero":
            w[mask_id] = 0
        state[key] = w
    data.pop("torch_dtype", None)
    data.pop("training_objective", None)  # from here on it is a diffusion model
    data.pop("dtype", None)
    data.update(vocab_size=vocab, model_type="CoDA", architectures=["CoDALanguageModel"], tie_word_embeddings=False,
                mask_token_id=mask_id, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id,
                bos_token_id=data.get("bos_token_id") if data.get("bos_token_id") is not None else tok.pad_id)
    for key in ("head_dim",):
        data.setdefault(key, data["hidden_size"] // data["num_attention_heads"])
    config = CodaConfig.from_dict(data)
    with torch.device("meta"):
        model = CodaLM(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{src} does not have the Qwen3 layout: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=True, assign=True)
    save_model(model, out, tokenizer=tok, dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
    return out
