"""Token shards and rows: boundaries, resumable tokenization, SFT rows, deterministic order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import coda_train.data as data_mod
from coda_model.tokenizer import CodaTokenizer
from coda_train.data import DataError, TokenStore, read_index, write_shards
from coda_train.loader import RowSource
from coda_train.testing import make_sft_shards, make_tokenizer, stdlib_dirs


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def test_shards_hold_every_document_followed_by_eos(tok, tmp_path):
    index = write_shards(stdlib_dirs("json"), tok, tmp_path / "d", suffixes=(".py",), shard_tokens=2000, progress=False)
    assert index["complete"] and len(index["shards"]) > 1 and index["dtype"] == "uint16"
    store = TokenStore([str(tmp_path / "d")])
    t = CodaTokenizer.from_dir(tok)
    assert np.all(store.slice(0, store.num_tokens)[store.doc_ends - 1] == t.eos_id)
    text = sorted(Path(stdlib_dirs("json")[0]).rglob("*.py"))[0].read_text()
    assert t.decode(store.slice(0, int(store.doc_ends[0]) - 1).tolist(), skip_special_tokens=False) == text


def test_interrupted_tokenization_resumes_to_identical_shards(tok, tmp_path, monkeypatch):
    inputs = stdlib_dirs("json")
    write_shards(inputs, tok, tmp_path / "whole", suffixes=(".py",), shard_tokens=1500, progress=False)
    real = data_mod.encode_document
    calls = {"n": 0}

    def dies_after_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt  # the user pressed ^C mid-way
        return real(*args, **kwargs)

    monkeypatch.setattr(data_mod, "encode_document", dies_after_four)
    with pytest.raises(KeyboardInterrupt):
        write_shards(inputs, tok, tmp_path / "resumed", suffixes=(".py",), shard_tokens=1500, progress=False)
    partial = read_index(tmp_path / "resumed")
    assert not partial["complete"] and 0 < partial["docs_done"] < 8
    monkeypatch.setattr(data_mod, "encode_document", real)
    write_shards(inputs, tok, tmp_path / "resumed", suffixes=(".py",), shard_tokens=1500, progress=False)
    a, b = TokenStore([str(tmp_path / "whole")]), TokenStore([str(tmp_path / "resumed")])
    assert np.array_equal(a.slice(0, a.num_tokens), b.slice(0, b.num_tokens))
    assert np.array_equal(a.doc_ends, b.doc_ends)


def test_resuming_into_a_directory_of_other_inputs_is_refused(tok, tmp_path):
    write_shards(stdlib_dirs("json"), tok, tmp_path / "d", suffixes=(".py",), progress=False)
    with pytest.raises(DataError, match="new --out"):
        write_shards(stdlib_dirs("json", "email"), tok, tmp_path / "d", suffixes=(".py",), progress=False)


def test_truncated_shard_is_detected(tok, tmp_path):
    write_shards(stdlib_dirs("json"), tok, tmp_path / "d", suffixes=(".py",), progress=False)
    f = tmp_path / "d" / "tokens-00000.bin"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated"):
        TokenStore([str(tmp_path / "d")])


def test_packed_rows_cover_the_stream_once_per_epoch_with_segment_ids(tok, tmp_path):
    write_shards(stdlib_dirs("json"), tok, tmp_path / "d", suffixes=(".py",), progress=False)
    store = TokenStore([str(tmp_path / "d")])
    rows = RowSource(store, 64, seed=1)
    seen = sorted(int(rows._order(0)[i]) for i in range(rows.num_rows))
    assert seen == list(range(store.num_tokens // 64))
    assert not np.array_equal(rows._order(0), rows._order(1))  # reshuffled each epoch
    b = rows.batch(0, rows.num_rows)
    for r in range(rows.num_rows):  # segment id increases right after each eos
        tokens, seg = b.tokens[r].numpy(), b.segment_ids[r].numpy()
        assert seg[0] == 0
        boundaries = np.nonzero(np.diff(seg))[0]
        assert np.all(tokens[boundaries] == store.eos_id)
    assert rows.batch(rows.num_rows, 1).epoch == 1


def test_sft_rows_mark_the_prompt_and_pad_the_tail(tok, tmp_path):
    sft = make_sft_shards(tmp_path / "sft", tok, num_examples=16)
    t = CodaTokenizer.from_dir(tok)
    store = TokenStore([str(sft)])
    assert store.kind == "sft"
    rows = RowSource(store, 256, seed=0, shuffle=False)
    b = rows.batch(0, 4)
    im_start = t.token_to_id("<|im_start|>")
    for r in range(4):
        tokens, src = b.tokens[r].tolist(), b.src_mask[r].tolist()
        n_src = sum(src)
        assert all(src[:n_src]) and not any(src[n_src:])
        assert tokens[0] == im_start and t.decode(tokens[:n_src], skip_special_tokens=False).endswith("<|im_start|>assistant")
        end = tokens.index(t.eos_id, n_src)  # the answer's <|im_end|>
        assert set(tokens[end + 2:]) <= {t.pad_id}
    short = RowSource(store, 128, seed=0)  # examples that do not fit are dropped
    assert short.num_rows < rows.num_rows
    with pytest.raises(DataError, match="seq_len"):
        RowSource(store, 32, seed=0)


def test_sft_jsonl_without_fields_is_a_clear_error(tok, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match="instruction/output"):
        write_shards([str(f)], tok, tmp_path / "o", kind="sft", progress=False)


def test_epoch_rows_make_short_epochs_of_distinct_random_subsets(tok, tmp_path):
    write_shards(stdlib_dirs("json"), tok, tmp_path / "d", suffixes=(".py",), progress=False)
    store = TokenStore([str(tmp_path / "d")])
    rows = RowSource(store, 64, seed=3, epoch_rows=10)
    assert rows.num_rows == 10 and rows.epoch_of(25) == 2
    e0, e1 = set(rows._order(0).tolist()), set(rows._order(1).tolist())
    assert len(e0) == 10 and e0 != e1 and max(e0 | e1) < store.num_tokens // 64


def test_curriculum_values_follow_the_epoch_of_the_batch():
    from coda_train.config import load_config
    from coda_train.trainer import masking_settings

    cfg = load_config(None, ["objective.prefix_probability=[0.01, 0.05, 0.1]", "objective.sampling_eps=[0.001, 0.25]"])
    assert masking_settings(cfg, 0).prefix_probability == 0.01
    assert masking_settings(cfg, 2).prefix_probability == 0.1
    assert masking_settings(cfg, 1).sampling_eps == 0.25 and masking_settings(cfg, 2).sampling_eps == 0.001


def test_cli_builds_a_tokenizer_and_shards(tmp_path, capsys):
    from coda_train.cli import main

    assert main(["tokenizer", "--out", str(tmp_path / "tok"), "--vocab-size", "400", "--suffix", ".py",
                 *stdlib_dirs("json")]) == 0
    assert CodaTokenizer.from_dir(tmp_path / "tok").vocab_size == 400
    assert main(["data", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "d"), "--suffix", ".py",
                 "--no-progress", *stdlib_dirs("json")]) == 0
    assert "tokens in 1 shard" in capsys.readouterr().out
    assert main(["data", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "e"),
                 str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_hf_source_reads_a_local_datasets_directory_like_jsonl(tok, tmp_path):
    pytest.importorskip("datasets", reason="hf: sources need `datasets` (installed by the all extra)")
    src = tmp_path / "ds"
    (src / "data").mkdir(parents=True)
    rows = [{"text": f"def f{i}(x):\n    return x + {i}\n"} for i in range(5)]
    (src / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = list(data_mod.iter_documents([f"hf:{src}:train"]))
    assert [d.text for d in docs] == [r["text"] for r in rows]
    index = write_shards([f"hf:{src}"], tok, tmp_path / "shards", progress=False)
    assert index["complete"]
    store = TokenStore([str(tmp_path / "shards")])
    assert len(store.doc_ends) == 5
    t = CodaTokenizer.from_dir(tok)
    assert t.decode(store.slice(0, int(store.doc_ends[0]) - 1).tolist(), skip_special_tokens=False) == rows[0]["text"]
    with pytest.raises(Exception, match="nosuchsplit|Unknown split|split"):
        list(data_mod.iter_documents([f"hf:{src}:nosuchsplit"]))
