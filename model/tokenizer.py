"""Tokenizer for CoDA directories: byte-level BPE (Qwen2 style) plus CoDA's special tokens.

Uses the `tokenizers` library directly (fast, no transformers import at server start). A directory
with `tokenizer.json` loads as is; one with only `vocab.json` + `merges.txt` (the Qwen2 slow format)
is assembled with the Qwen2 pre-tokenizer. Special tokens come from `tokenizer_config.json`'s
`added_tokens_decoder` and `special_tokens_map.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from coda_model.errors import ModelLoadError, read_json_object

# Qwen2's split pattern (same as tokenizers' Qwen2 conversion in transformers).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIM_TOKENS = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>")


def with_qwen2_text_pipeline(tok: Tokenizer) -> Tokenizer:
    """Set Qwen2's pipeline around `tok`'s BPE model (NFC, the Qwen2 split then byte-level mapping,
    byte-level decoding) and return it. The one definition: a vocabulary we train and the same one
    loaded from vocab.json + merges.txt must cut text the same way."""
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def build_bpe_from_vocab_merges(vocab_path: Path, merges_path: Path) -> Tokenizer:
    """Assemble a Qwen2-style byte-level BPE `Tokenizer` from the slow-tokenizer files."""
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            a, b = line.split(" ")
            merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False))
    return with_qwen2_text_pipeline(tok)


def _token_content(value) -> Optional[str]:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class CodaTokenizer:
    """Text <-> ids with the CoDA special-token ids resolved by name."""

    def __init__(self, tok: Tokenizer, mask_token: str = "<|mask|>", pad_token: str = "<|endoftext|>",
                 eos_token: str = "<|im_end|>", special_tokens: Iterable[str] = ()) -> None:
        self.tok = tok
        self.mask_token, self.pad_token, self.eos_token = mask_token, pad_token, eos_token
        self.mask_id = self._require(mask_token, "mask")
        self.pad_id = self._require(pad_token, "pad")
        self.eos_id = self._require(eos_token, "eos")
        self.special_ids = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special) | {self.mask_id, self.pad_id, self.eos_id}
        self.special_ids |= {i for i in (tok.token_to_id(s) for s in special_tokens) if i is not None}
        self.fim_ids = {name: tok.token_to_id(name) for name in FIM_TOKENS}

    def _require(self, token: str, role: str) -> int:
        idx = self.tok.token_to_id(token)
        if idx is None:
            raise ValueError(f"the tokenizer has no {role} token {token!r}")
        return idx

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (max id + 1)."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.tok.token_to_id(token)

    # --- files ------------------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path) -> "CodaTokenizer":
        path = Path(path)
        tok_json, vocab, merges = path / "tokenizer.json", path / "vocab.json", path / "merges.txt"
        cfg = read_json_object(path / "tokenizer_config.json") if (path / "tokenizer_config.json").exists() else {}
        smap = read_json_object(path / "special_tokens_map.json") if (path / "special_tokens_map.json").exists() else {}
        if tok_json.is_file():
            try:
                tok = Tokenizer.from_file(str(tok_json))
            except Exception as exc:  # tokenizers raises a bare Exception on parse errors
                raise ModelLoadError(f"{tok_json} could not be parsed ({exc}): restore it from the model download") from exc
        elif vocab.is_file() and merges.is_file():
            tok = build_bpe_from_vocab_merges(vocab, merges)
        else:
            raise ModelLoadError(f"{path} has no tokenizer: add tokenizer.json (or vocab.json + merges.txt) from the model download")
        added = [(int(i), v) for i, v in cfg.get("added_tokens_decoder", {}).items()]
        if not added and (path / "added_tokens.json").exists():
            added = [(i, {"content": c, "special": True}) for c, i in read_json_object(path / "added_tokens.json").items()]
        for idx, spec in sorted(added):
            content = spec["content"]
            if tok.token_to_id(content) is None:
                if idx != tok.get_vocab_size(with_added_tokens=True):
                    raise ModelLoadError(f"{path}/tokenizer_config.json: added token {content!r} has id {idx}, "
                                         f"expected {tok.get_vocab_size(with_added_tokens=True)}: the tokenizer files do not match")
                tok.add_special_tokens([AddedToken(content, special=bool(spec.get("special", True)), normalized=False)])
        names = {role: _token_content(smap.get(f"{role}_token")) or _token_content(cfg.get(f"{role}_token"))
                 for role in ("mask", "pad", "eos")}
        mask = names["mask"] or "<|mask|>"
        if tok.token_to_id(mask) is None:
            raise ModelLoadError(f"{path}: the tokenizer defines no mask token ({mask!r}); a diffusion model needs one — "
                                 "use the tokenizer files that came with the CoDA model")
        extra = [_token_content(t) for t in smap.get("additional_special_tokens", [])]
        try:
            return cls(tok, mask_token=mask, pad_token=names["pad"] or "<|endoftext|>",
                       eos_token=names["eos"] or "<|im_end|>", special_tokens=[t for t in extra if t])
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}: use the tokenizer files that came with the CoDA model") from exc

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(path / "tokenizer.json"))
        decoder = {str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": t.special}
                   for i, t in sorted(self.tok.get_added_tokens_decoder().items())}
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "added_tokens_decoder": decoder,
               "mask_token": self.mask_token, "pad_token": self.pad_token, "eos_token": self.eos_token,
               "bos_token": None, "clean_up_tokenization_spaces": False, "model_max_length": 131072,
               "padding_side": "right", "split_special_tokens": False}
        (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        smap = {"mask_token": self.mask_token, "pad_token": self.pad_token, "eos_token": self.eos_token}
        (path / "special_tokens_map.json").write_text(json.dumps(smap, indent=2) + "\n", encoding="utf-8")
