"""Golden fixtures for every post-processing step (tests/fixtures/postprocess/<step>.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from coda_lsp.postprocess import CHAIN, STEPS, PostContext, leading_ws, postprocess

FIXTURES = Path(__file__).parent / "fixtures" / "postprocess"
DROP = "__DROP__"


def load_cases():
    for path in sorted(FIXTURES.glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            yield pytest.param(path.stem, case, id=f"{path.stem}: {case['name']}")


def context_of(case: dict) -> tuple[str, PostContext]:
    doc = case["document"]
    before, rest = doc.split("├", 1)
    completion, after = rest.split("┤", 1)
    line_prefix = before.rsplit("\n", 1)[-1]
    indent = case.get("indent", line_prefix if not line_prefix.strip() else "")
    return completion, PostContext(kind=case["kind"], line_prefix=line_prefix, line_suffix=after.split("\n", 1)[0],
                                   suffix=after, indent=indent, indent_unit=case.get("indent_unit", "    "))


def test_every_step_has_fixtures():
    assert {p.stem for p in FIXTURES.glob("*.toml")} >= set(STEPS) - {"normalize_newlines"} | {"chain"}


@pytest.mark.parametrize("step,case", list(load_cases()))
def test_postprocess_golden(step, case):
    completion, ctx = context_of(case)
    out = postprocess(completion, ctx) if step == "chain" else STEPS[step](completion, ctx)
    expected = None if case["expected"] == DROP else case["expected"]
    assert out == expected


def test_chain_is_pure_and_idempotent_on_clean_text():
    ctx = PostContext(kind="line", line_prefix="x = ", line_suffix="")
    assert postprocess("foo(1)", ctx) == "foo(1)"
    assert postprocess(postprocess("foo(1", ctx), ctx) == "foo(1)"
    assert leading_ws("\t  x") == "\t  "
    assert len(CHAIN) == 7
