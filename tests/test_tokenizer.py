"""The CoDA tokenizer: special ids as the spec says, exact round trips, same ids as transformers' Qwen2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from coda_model.tokenizer import CodaTokenizer

CODE = 'def fib(n: int) -> int:\n\t"""Fibonacci — naïve 😀 中文"""\r\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n'


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> CodaTokenizer:
    return CodaTokenizer.from_dir(tiny_model_dir)


def test_special_token_ids_match_the_spec(tok: CodaTokenizer):
    assert (tok.mask_id, tok.pad_id, tok.eos_id) == (151669, 151643, 151645)
    assert tok.encode("<|mask|>") == [151669]
    assert tok.encode("a<|endoftext|>b<|im_end|>") == [tok.encode("a")[0], 151643, tok.encode("b")[0], 151645]
    assert tok.fim_ids["<|fim_prefix|>"] == 151659 and tok.fim_ids["<|fim_suffix|>"] == 151661
    assert tok.vocab_size == 151670


def test_decode_round_trip_is_exact_and_skips_specials(tok: CodaTokenizer):
    ids = tok.encode(CODE)
    assert tok.decode(ids) == CODE
    assert tok.decode(ids + [tok.mask_id, tok.eos_id]) == CODE
    assert tok.decode([tok.mask_id], skip_special_tokens=False) == "<|mask|>"


def test_vocab_merges_tokenizer_matches_transformers_qwen2(coda_v0_dir: Path, tok: CodaTokenizer):
    transformers = pytest.importorskip("transformers")
    ref = transformers.Qwen2Tokenizer.from_pretrained(str(coda_v0_dir))
    for text in (CODE, "x  =   1\n\n\n  # comment's\n", "123456 + 7.5e-3", "    if (a&&b) { return; }\n"):
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
