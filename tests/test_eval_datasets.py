"""Datasets load into Tasks; bad input gives errors that say where and what to do; prompts and
post-processing follow the paper's formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from coda_train.eval.datasets import DatasetError, default_data_dir, load_tasks
from coda_train.eval.prompts import build_prompt, extract_code, normalize_ws, program_for, sanitize
from coda_train.eval.sandbox import SandboxConfig, run_program

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_shipped_and_shared_datasets_have_their_documented_sizes():
    assert len(load_tasks("humaneval")) == 164
    assert default_data_dir().is_dir(), "the datasets shipped in the package (train/eval/data)"
    assert len(load_tasks("mbpp")) == 500  # test split, task ids 11..510
    assert len(load_tasks("mbpp", split="all")) == 974
    assert len(load_tasks("humaneval-infilling-single")) == 1033
    assert len(load_tasks("infill")) == 1033  # alias
    assert len(load_tasks("humaneval-infilling-random-light")) == 164


def test_shipped_datasets_are_the_shared_copies_with_licence_and_readme(coda_v0_dir):
    shared = coda_v0_dir.parent / "data"
    for name in ("mbpp", "humaneval-infilling"):
        shipped = default_data_dir() / name
        assert (shipped / "LICENSE").stat().st_size > 500 and (shipped / "README.md").is_file()
        for src in (shared / name).iterdir():
            if src.name != "README.md":  # ours adds where the copy lives
                assert (shipped / src.name).read_bytes() == src.read_bytes(), src.name
    assert "Attribution 4.0 International" in (default_data_dir() / "mbpp" / "LICENSE").read_text()


def test_missing_dataset_error_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError, match=r"mbpp/mbpp\.jsonl.*put"):
        load_tasks("mbpp", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="HumanEval-SingleLineInfilling.jsonl.gz"):
        load_tasks("humaneval-infilling-single", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="--dataset"):
        load_tasks("evalplus")


def test_malformed_row_error_names_file_and_line():
    with pytest.raises(DatasetError, match=r"malformed\.jsonl:2: malformed JSON row"):
        load_tasks("evalplus", dataset=FIXTURES / "malformed.jsonl")


def test_row_missing_fields_is_reported(tmp_path):
    bad = tmp_path / "he.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "def f(): pass"}\n')
    with pytest.raises(DatasetError, match=r"he\.jsonl:1: row lacks field\(s\) test, entry_point"):
        load_tasks("evalplus", dataset=bad)


def test_evalplus_files_load_both_flavours_and_their_references_pass():
    he = load_tasks("evalplus", dataset=FIXTURES / "HumanEvalPlus-mini.jsonl")
    mb = load_tasks("evalplus", dataset=FIXTURES / "MbppPlus-mini.jsonl")
    assert [t.style for t in he] == ["humaneval", "humaneval"] and mb[0].style == "mbpp"
    assert mb[0].prompt.startswith("Write a function") and mb[0].shown_tests
    cfg = SandboxConfig(timeout_s=5)
    for t in he + mb:
        assert run_program(program_for(t, t.canonical), cfg).status == "passed", t.task_id
        assert run_program(program_for(t, ""), cfg).status == "failed", t.task_id


def test_humaneval_chat_prompt_continues_the_assistant_turn():
    task = load_tasks("humaneval")[0]
    p = build_prompt(task)
    assert p.startswith("<|im_start|>user\nWrite a solution to the following problem")
    assert p.endswith(f"<think>\n\n</think>\n\nHere is the completed function:\n```python\n{task.prompt}\n")
    assert build_prompt(task, use_chat=False) == task.prompt


def test_mbpp_prompt_quotes_the_three_asserts():
    task = load_tasks("mbpp")[0]
    p = build_prompt(task)
    assert "You are an expert Python programmer, and here is your task: " + task.prompt in p
    assert all(t in p for t in task.shown_tests) and len(task.shown_tests) == 3
    assert p.endswith("Here is the completed function:\n```python\n")


def test_post_processing_cuts_at_im_end_stop_strings_and_fences():
    he = load_tasks("humaneval")[0]
    gen = "    return True\n\ndef helper():\n    pass\n```<|im_end|>junk"
    assert extract_code(gen, he) == "    return True\n"
    mb = load_tasks("mbpp")[0]
    assert extract_code("def f():\n    return 1\n```\nprint(f())", mb) == "def f():\n    return 1\n"
    assert extract_code("```python\ndef f(): pass\n```", mb) == "def f(): pass\n"
    assert extract_code("x = 1<|im_end|>```", mb) == "x = 1"


def test_sanitize_drops_stray_top_level_statements():
    code = "import math\n\ndef f(x):\n    return math.sqrt(x)\n\nprint(f(4))\nassert f(4) == 2\n"
    assert sanitize(code, "f") == "import math\ndef f(x):\n    return math.sqrt(x)\n"
    assert sanitize("def f(:", "f") == "def f(:"


def test_whitespace_normalisation_for_exact_match():
    assert normalize_ws("  x = 1 \n\n   y  =  2\n") == normalize_ws("x = 1\ny = 2")
    assert normalize_ws("x = 1") != normalize_ws("x = 2")
