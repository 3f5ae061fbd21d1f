"""The lm-eval adapter: `--model coda` is registered when lm-eval is importable; otherwise
`coda-eval lm-eval` says how to get it."""

from __future__ import annotations

import importlib.util

import pytest

from coda_train.eval.cli import main
from coda_train.eval.lm_eval_adapter import INSTALL_HINT, coerce_setting

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


@pytest.mark.skipif(HAVE_LM_EVAL, reason="lm-eval is installed: the registration test below runs instead")
def test_without_lm_eval_the_command_explains_how_to_get_it(capsys):
    assert main(["lm-eval", "--model", "coda", "--tasks", "humaneval"]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_LM_EVAL, reason="needs lm-eval (pip install lm-eval)")
def test_with_lm_eval_the_coda_model_is_registered():
    from lm_eval.api.registry import get_model

    from coda_train.eval.lm_eval_adapter import register

    cls = register()
    assert get_model("coda") is cls


def test_model_args_strings_become_decode_settings_types():
    assert coerce_setting("steps", "64") == 64
    assert coerce_setting("temperature", "0.2") == 0.2
    assert coerce_setting("top_p", "none") is None
    assert coerce_setting("top_k", "5") == 5 and coerce_setting("threshold", "0.9") == 0.9
    assert coerce_setting("use_chat", "false") is False
    assert coerce_setting("alg", "entropy") == "entropy"
