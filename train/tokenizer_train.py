"""Train a small CoDA-style tokenizer: byte-level BPE with Qwen2's split pattern and CoDA's special tokens.

Used for tests (a few hundred ids trained on stdlib files in a fraction of a second) and for our own
small models. The special tokens mirror CoDA's roles: `<|endoftext|>` pad, `<|im_end|>` eos,
`<|mask|>` mask, Qwen's FIM tokens, chat and think markers. The result is a directory that
`coda_model.tokenizer.CodaTokenizer.from_dir` loads.

    coda-train tokenizer --out runs/tok --vocab-size 1024 /usr/lib/python3.11/json/*.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from coda_model.tokenizer import CodaTokenizer, with_qwen2_text_pipeline

# Ordered as in Qwen3/CoDA (ids differ: they follow the learned vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<think>", "</think>", "<|mask|>",
)


def iter_texts(paths: Iterable[str | Path], suffixes: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the text of each file (directories are walked, sorted; undecodable files skipped)."""
    for path in sorted(Path(p) for p in paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            if suffixes and f.suffix not in suffixes:
                continue
            try:
                yield f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> CodaTokenizer:
    """Train a byte-level BPE whose special tokens come first after the byte alphabet's merges."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {256 + len(SPECIAL_TOKENS)}")
    tok = with_qwen2_text_pipeline(Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False)))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=min_frequency,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # appended after the learned vocabulary
    return CodaTokenizer(tok, mask_token="<|mask|>", pad_token="<|endoftext|>", eos_token="<|im_end|>")


def train_tokenizer_dir(out: str | Path, paths: Iterable[str | Path], vocab_size: int = 1024,
                        suffixes: tuple[str, ...] = ()) -> Path:
    """Train on the files under `paths` and write the tokenizer directory `out`."""
    tok = train_tokenizer(iter_texts(paths, suffixes), vocab_size=vocab_size)
    out = Path(out)
    tok.save(out)
    return out
