"""Token shards: `coda-train data` writes them, the trainer memory-maps them.

A shard directory holds
- `tokens-NNNNN.bin`: raw little-endian token ids (uint16 when the vocabulary fits, else uint32);
- `docs-NNNNN.npy`: int64 [n_docs, 2] rows of (end offset within the shard, prompt length) — the end
  offsets are the document boundaries (each document ends with the eos token, as CoDA packs them);
  the prompt length is 0 for plain text and the unmaskable prompt span for SFT examples;
- `index.json`: dtype, kind (text | sft), tokenizer facts, the shards, and `docs_done` (how many input
  documents are in the committed shards). It is rewritten atomically after every shard, so an
  interrupted run resumes by skipping `docs_done` documents of the (sorted, deterministic) input.

Inputs: files or directories of text (one document per file), `.jsonl` files with a `text` field, or for
SFT `.jsonl` with `instruction`/`output` (or `prompt`/`response`) fields rendered with CoDA's SFT chat
format (spec 3.3). A `datasets` source is accepted as `hf:NAME[:SPLIT]` when `datasets` is installed and
the data is in the local cache (nothing downloads at run time).

    coda-train data --tokenizer runs/tok --out runs/data/py /usr/lib/python3.11/json
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from coda_model.tokenizer import CodaTokenizer

INDEX = "index.json"
SFT_PROMPT = "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant"
SFT_ANSWER = "\n<think>\n\n</think>\n\n{output}<|im_end|>\n"


class DataError(ValueError):
    """Missing or inconsistent shards; the message says what to run."""


@dataclass
class Document:
    text: str = ""  # plain text document
    prompt: str = ""  # SFT: the user turn (never masked)
    answer: str = ""  # SFT: the assistant turn


def iter_documents(inputs: Iterable[str], kind: str = "text", suffixes: tuple[str, ...] = (),
                   fields: Optional[tuple[str, str]] = None) -> Iterator[Document]:
    """Documents in a deterministic order (sorted paths, file order inside JSONL)."""
    for item in inputs:
        if item.startswith("hf:"):
            yield from _iter_hf(item[3:], kind, fields)
            continue
        path = Path(item)
        if not path.exists():
            raise DataError(f"input {path} does not exist")
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            if suffixes and f.suffix not in suffixes:
                continue
            if f.suffix == ".jsonl":
                with f.open(encoding="utf-8") as fh:
                    for line in fh:
                        if line.strip():
                            yield _from_record(json.loads(line), kind, f, fields)
            elif kind == "text":
                try:
                    yield Document(text=f.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, OSError):
                    continue
            else:
                raise DataError(f"{f}: SFT data must be .jsonl with instruction/output fields")


def _from_record(rec: dict, kind: str, where, fields: Optional[tuple[str, str]] = None) -> Document:
    if kind == "text":
        if "text" not in rec:
            raise DataError(f"{where}: a JSONL record has no 'text' field")
        return Document(text=rec["text"])
    if fields:
        prompt, answer = rec.get(fields[0]), rec.get(fields[1])
    else:
        prompt = rec.get("instruction", rec.get("prompt"))
        answer = rec.get("output", rec.get("response"))
    if prompt is None or answer is None:
        want = "/".join(fields) if fields else "instruction/output (or prompt/response)"
        raise DataError(f"{where}: an SFT record needs {want} fields")
    return Document(prompt=prompt, answer=answer)


def _iter_hf(spec: str, kind: str, fields: Optional[tuple[str, str]] = None) -> Iterator[Document]:
    try:
        import datasets  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DataError("hf: inputs need the `datasets` package: pip install datasets") from exc
    name, _, split = spec.partition(":")
    for rec in datasets.load_dataset(name, split=split or "train", streaming=True):
        yield _from_record(rec, kind, f"hf:{spec}", fields)


def encode_document(doc: Document, tok: CodaTokenizer, kind: str) -> tuple[list[int], int]:
    """-> (ids ending with eos, prompt length)."""
    if kind == "text":
        ids = tok.encode(doc.text)
        return ids + [tok.eos_id], 0
    prompt = tok.encode(SFT_PROMPT.format(instruction=doc.prompt))
    answer = tok.encode(SFT_ANSWER.format(output=doc.answer))
    return prompt + answer, len(prompt)


def write_shards(inputs: list[str], tokenizer_dir: str | Path, out: str | Path, *, kind: str = "text",
                 shard_tokens: int = 1 << 24, suffixes: tuple[str, ...] = (), progress: bool = True,
                 fields: Optional[tuple[str, str]] = None) -> dict:
    """Tokenize `inputs` into shards under `out`; resumes from `out/index.json` if present."""
    if kind not in ("text", "sft"):
        raise DataError(f"unknown data kind {kind!r}: use text or sft")
    tok = CodaTokenizer.from_dir(tokenizer_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if tok.vocab_size <= 65536 else "uint32"
    index = {"version": 1, "kind": kind, "dtype": dtype, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
             "pad_id": tok.pad_id, "mask_id": tok.mask_id, "shards": [], "docs_done": 0, "num_tokens": 0,
             "inputs": list(inputs), "complete": False}
    if (out / INDEX).is_file():
        old = read_index(out)
        if (old["kind"], old["vocab_size"], old["inputs"]) != (kind, tok.vocab_size, list(inputs)):
            raise DataError(f"{out} holds shards from other inputs/tokenizer/kind: use a new --out directory")
        index = old
        if index["complete"]:
            return index
    skip = index["docs_done"]
    buf: list[np.ndarray] = []
    meta: list[tuple[int, int]] = []
    size = 0
    bar = _bar(progress, skip)
    for n, doc in enumerate(iter_documents(inputs, kind, suffixes, fields)):
        if n < skip:
            continue
        ids, prompt_len = encode_document(doc, tok, kind)
        size += len(ids)
        buf.append(np.asarray(ids, dtype=dtype))
        meta.append((size, prompt_len))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(tokens=index["num_tokens"] + size)
        if size >= shard_tokens:
            _commit_shard(out, index, buf, meta, n + 1)
            buf, meta, size = [], [], 0
    if buf:
        _commit_shard(out, index, buf, meta, index["docs_done"] + len(meta))
    index["complete"] = True
    _write_index(out, index)
    if bar is not None:
        bar.close()
    return index


def write_token_array(out: str | Path, tokens: np.ndarray, doc_ends: np.ndarray, tok: CodaTokenizer,
                      vocab_size: Optional[int] = None) -> dict:
    """Write already-tokenized text (one shard) in the same format (benchmarks, synthetic data)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocab_size or tok.vocab_size
    dtype = "uint16" if vocab <= 65536 else "uint32"
    index = {"version": 1, "kind": "text", "dtype": dtype, "vocab_size": vocab, "eos_id": tok.eos_id,
             "pad_id": tok.pad_id, "mask_id": tok.mask_id, "shards": [], "docs_done": 0, "num_tokens": 0,
             "inputs": ["<array>"], "complete": False}
    ends = np.asarray(doc_ends, dtype=np.int64)
    meta = [(int(e), 0) for e in ends]
    _commit_shard(out, index, [np.asarray(tokens, dtype=dtype)], meta, len(meta))
    index["complete"] = True
    _write_index(out, index)
    return index


def _bar(enabled: bool, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(desc="tokenize", unit="doc", initial=initial, dynamic_ncols=True)


def _commit_shard(out: Path, index: dict, buf: list[np.ndarray], meta: list[tuple[int, int]], docs_done: int) -> None:
    i = len(index["shards"])
    tokens = np.concatenate(buf)
    name = f"tokens-{i:05d}.bin"
    _atomic_bytes(out / name, tokens.tobytes())
    docs = np.asarray(meta, dtype=np.int64).reshape(-1, 2)
    tmp = out / f".docs-{i:05d}.tmp.npy"
    np.save(tmp, docs)
    os.replace(tmp, out / f"docs-{i:05d}.npy")
    index["shards"].append({"tokens": name, "docs": f"docs-{i:05d}.npy", "num_tokens": int(tokens.size),
                            "num_docs": len(meta)})
    index["num_tokens"] += int(tokens.size)
    index["docs_done"] = docs_done
    _write_index(out, index)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_index(out: Path, index: dict) -> None:
    _atomic_bytes(out / INDEX, (json.dumps(index, indent=1) + "\n").encode())


def read_index(path: str | Path) -> dict:
    path = Path(path)
    if not (path / INDEX).is_file():
        raise DataError(f"{path} has no {INDEX}: create the shards with `coda-train data --out {path} ...`")
    try:
        return json.loads((path / INDEX).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path / INDEX} is corrupt ({exc}): rerun `coda-train data` into a new directory") from exc


class TokenStore:
    """All shards of one or more directories as one memory-mapped token stream with document metadata."""

    def __init__(self, dirs: list[str], expect_vocab: Optional[int] = None) -> None:
        if not dirs:
            raise DataError("data.train is empty: list shard directories written by `coda-train data`")
        self.tokens: list[np.ndarray] = []
        ends, prompts, kinds = [], [], set()
        offset = 0
        for d in dirs:
            index = read_index(d)
            if not index["shards"]:
                raise DataError(f"{d} has no shards yet: run `coda-train data` to completion")
            if expect_vocab is not None and index["vocab_size"] > expect_vocab:
                raise DataError(f"{d} was tokenized with {index['vocab_size']} ids but the model has {expect_vocab} "
                                "embedding rows: tokenize with the model's tokenizer")
            kinds.add(index["kind"])
            self.eos_id, self.pad_id = index["eos_id"], index["pad_id"]
            for shard in index["shards"]:
                f = Path(d) / shard["tokens"]
                if not f.is_file() or f.stat().st_size != shard["num_tokens"] * np.dtype(index["dtype"]).itemsize:
                    raise DataError(f"shard {f} is missing or truncated: rerun `coda-train data` into a new directory")
                self.tokens.append(np.memmap(f, dtype=index["dtype"], mode="r"))
                docs = np.load(Path(d) / shard["docs"])
                ends.append(docs[:, 0] + offset)
                prompts.append(docs[:, 1])
                offset += shard["num_tokens"]
        if len(kinds) > 1:
            raise DataError(f"data.train mixes {sorted(kinds)} shards: SFT and text data need separate stages")
        self.kind = kinds.pop()
        self.doc_ends = np.concatenate(ends)  # exclusive end offsets in the global stream
        self.doc_starts = np.concatenate(([0], self.doc_ends[:-1]))
        self.prompt_lens = np.concatenate(prompts)
        self.shard_starts = np.cumsum([0] + [t.size for t in self.tokens])
        self.num_tokens = int(self.shard_starts[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the global stream (may cross shards) as int64."""
        out = np.empty(stop - start, dtype=np.int64)
        pos = start
        while pos < stop:
            s = int(np.searchsorted(self.shard_starts, pos, side="right") - 1)
            local = pos - self.shard_starts[s]
            n = min(stop - pos, self.tokens[s].size - local)
            out[pos - start:pos - start + n] = self.tokens[s][local:local + n]
            pos += n
        return out

    def segment_ids(self, start: int, stop: int) -> np.ndarray:
        """Document index of each position in [start, stop) (the eos belongs to the document it ends)."""
        return np.searchsorted(self.doc_ends, np.arange(start, stop), side="right")
