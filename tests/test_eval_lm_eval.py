"""The lm-eval adapter: `--model coda` is registered when lm-eval is importable and answers
lm-eval's own generate_until requests; otherwise `coda-eval lm-eval` says how to get it.
(`scripts/test.sh` installs lm-eval, so the "missing" case runs in a subprocess that blocks the import.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from coda_train.eval.lm_eval_adapter import INSTALL_HINT
from coda_train.eval.sampler import DecodeSettings

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


def test_without_lm_eval_the_command_explains_how_to_get_it():
    code = ("import sys; sys.modules['lm_eval'] = None\n"   # makes `import lm_eval` raise ImportError
            "from coda_train.eval.cli import main\n"
            "sys.exit(main(['lm-eval', '--model', 'coda', '--tasks', 'humaneval']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert INSTALL_HINT in proc.stderr


needs_lm_eval = pytest.mark.skipif(not HAVE_LM_EVAL, reason="needs lm-eval: bash scripts/test.sh installs it")


@needs_lm_eval
def test_with_lm_eval_the_coda_model_is_registered():
    from lm_eval.api.registry import get_model

    from coda_train.eval.lm_eval_adapter import register

    cls = register()
    assert get_model("coda") is cls


@needs_lm_eval
def test_generate_until_answers_lm_evals_requests_with_the_engine(tiny_model_dir):
    from lm_eval.api.instance import Instance

    from coda_train.eval.lm_eval_adapter import register

    lm = register()(pretrained=str(tiny_model_dir), device="cpu", steps="4", temperature="0", batch_size=2)
    reqs = [Instance(request_type="generate_until", doc={}, idx=i,
                     arguments=(prompt, {"until": ["\n\n"], "max_gen_toks": 8}))
            for i, prompt in enumerate(["def add(a, b):\n", "def sub(a, b):\n", "x = 1\n"])]
    first, again = lm.generate_until(reqs), lm.generate_until(reqs)
    assert len(first) == 3 and all(isinstance(t, str) and "\n\n" not in t for t in first)
    assert first == again        # fixed seeds: lm-eval re-runs reproduce
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood(reqs)


def test_model_args_strings_become_decode_settings_types():
    s = DecodeSettings().with_values({"steps": "64", "temperature": "0.2", "top_p": "none", "top_k": "5",
                                      "threshold": "0.9", "use_chat": "false", "alg": "entropy",
                                      "max_new_tokens": "32"})
    d = s.decode
    assert (d.steps, d.temperature, d.top_p, d.top_k, d.threshold, d.alg) == (64, 0.2, None, 5, 0.9, "entropy")
    assert s.use_chat is False and s.max_new_tokens == 32
    with pytest.raises(ValueError, match="unknown decode setting"):
        DecodeSettings().with_values({"stepz": "4"})
    with pytest.raises(ValueError, match="steps must be >= 1"):
        DecodeSettings().with_values({"steps": "0"})
