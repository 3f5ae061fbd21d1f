"""Train the default model's byte-level BPE tokenizer (Qwen2-style pre-tokenizer + CoDA special tokens).

Why our own: CoDA's Qwen tokenizer has 151,936 rows; at hidden 256-384 its embedding + lm_head alone
would be ~100 M parameters, 10x the rest of a model that must stay a few tens of MB and fast on a
laptop CPU. A code-only BPE of a few thousand merges compresses our code almost as well.

`--measure 4096,8192,16384` trains each size on the training split and reports bytes/token on the
held-out split plus the embedding/lm_head parameter cost at a given hidden size, which is how the
shipped vocabulary size was chosen (see MODEL_CARD.md). Without `--measure` it trains one size and
saves it with `CodaTokenizer.save`, so the directory loads through `coda_model.load_model`.

Usage:
    .venv/bin/python train/recipes/default_model/train_tokenizer.py --data data/default_model \
        --vocab 8192 --out runs/default_model/tokenizer [--measure 4096,8192,16384 --hidden 320]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from coda_model.tokenizer import CodaTokenizer, with_qwen2_text_pipeline

# CoDA's special tokens, in Qwen's order; ids 0..7 of our vocabulary.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                  "<|fim_suffix|>", "<|fim_pad|>", "<|mask|>"]


def read_texts(path: Path, max_bytes: int, seed: int = 0) -> list[str]:
    rows = [json.loads(l)["text"] for l in path.read_text(encoding="utf-8").splitlines()]
    random.Random(seed).shuffle(rows)
    out, total = [], 0
    for t in rows:
        if total >= max_bytes:
            break
        out.append(t)
        total += len(t.encode())
    return out


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = with_qwen2_text_pipeline(Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False)))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def as_coda(tok: Tokenizer) -> CodaTokenizer:
    return CodaTokenizer(tok, mask_token="<|mask|>", pad_token="<|endoftext|>", eos_token="<|im_end|>",
                         special_tokens=SPECIAL_TOKENS)


def bytes_per_token(tok: Tokenizer, texts: list[str]) -> float:
    enc = tok.encode_batch(texts, add_special_tokens=False)
    return sum(len(t.encode()) for t in texts) / max(1, sum(len(e.ids) for e in enc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/default_model", help="folder with train.jsonl / heldout.jsonl")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size including special tokens")
    ap.add_argument("--out", default="runs/default_model/tokenizer")
    ap.add_argument("--train-mb", type=float, default=24.0, help="training text sampled from train.jsonl")
    ap.add_argument("--measure", default="", help="comma-separated vocab sizes to compare (writes measure.json)")
    ap.add_argument("--hidden", type=int, default=320, help="hidden size used for the parameter-cost column")
    args = ap.parse_args(argv)
    data = Path(args.data)
    texts = read_texts(data / "train.jsonl", int(args.train_mb * 2**20))
    held = read_texts(data / "heldout.jsonl", 2**40)
    out = Path(args.out)
    if args.measure:
        rows = []
        for v in (int(x) for x in args.measure.split(",")):
            t0 = time.time()
            tok = train_bpe(texts, v)
            rows.append({"vocab": v, "heldout_bytes_per_token": round(bytes_per_token(tok, held), 3),
                         "embed_plus_lm_head_params": 2 * v * args.hidden, "hidden": args.hidden,
                         "train_s": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "measure.json").write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    tok = train_bpe(texts, args.vocab)
    coda = as_coda(tok)
    coda.save(out)
    check = CodaTokenizer.from_dir(out)
    assert check.mask_id == coda.mask_id and check.vocab_size == coda.vocab_size
    print(json.dumps({"vocab_size": check.vocab_size, "mask_id": check.mask_id, "pad_id": check.pad_id,
                      "eos_id": check.eos_id, "heldout_bytes_per_token": round(bytes_per_token(tok, held), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
