"""lm-evaluation-harness adapter: `--model coda` (the harness the paper used, coda-spec §6.1).

Registered only when `lm_eval` is importable (it is not a dependency of coda-lsp):
    pip install lm-eval
    coda-eval lm-eval --model coda --model_args pretrained=DIR,steps=768 --tasks humaneval_instruct \
        --apply_chat_template true --confirm_run_unsafe_code
`coda-eval lm-eval` imports this module (which registers the model) and hands the rest of the
command line to lm-eval's own CLI. Masked-diffusion models give no left-to-right likelihood, so
only `generate_until` tasks are supported; loglikelihood requests raise a clear error.
"""

from __future__ import annotations

import functools
import sys

from coda_train.eval.prompts import EOS_STRINGS, cut
from coda_train.eval.sampler import DecodeSettings

INSTALL_HINT = ("coda-eval lm-eval: lm-evaluation-harness is not installed; `pip install lm-eval` into this "
                "environment, or use `coda-eval run humaneval|mbpp|...`, which needs no extra packages")


@functools.cache
def _model_class():
    """Build and register the LM subclass (needs lm_eval); once per process (lm-eval refuses a second
    registration under the same name)."""
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    from coda_train.eval.sampler import EngineSampler

    @register_model("coda")
    class CodaLMEval(LM):
        """`--model_args pretrained=DIR[,device=..,dtype=..,steps=..,max_new_tokens=..,temperature=..,
        top_p=..,alg=..,batch_size=..]`; every DecodeSettings field may be set this way."""

        def __init__(self, pretrained: str, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                     **decode):
            super().__init__()
            self.sampler = EngineSampler(pretrained, device=device, dtype=dtype)
            self.settings = DecodeSettings().with_values(decode)   # ValueError names an unknown or bad one
            self.batch_size = int(batch_size)

        @property
        def tokenizer_name(self) -> str:
            return "coda-qwen3"

        def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
            text = ""
            for i, m in enumerate(chat_history):
                last = i == len(chat_history) - 1
                if m["role"] == "assistant" and last and not add_generation_prompt:
                    text += f"<|im_start|>assistant\n<think>\n\n</think>\n\n{m['content']}"
                else:
                    text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
            if add_generation_prompt:
                text += "<|im_start|>assistant\n<think>\n\n</think>\n\n"
            return text

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = []
            for i in range(0, len(requests), self.batch_size):
                batch = requests[i:i + self.batch_size]
                contexts = [r.args[0] for r in batch]
                kwargs = batch[0].args[1] if len(batch[0].args) > 1 else {}
                settings = self.settings
                if "max_gen_toks" in kwargs:
                    settings = settings.with_values({"max_new_tokens": kwargs["max_gen_toks"]})
                texts = self.sampler.generate(contexts, settings=settings, seed=settings.seed + i)
                for r, t in zip(batch, texts):
                    until = r.args[1].get("until", []) if len(r.args) > 1 else []
                    out.append(cut(cut(t, EOS_STRINGS), tuple(until) if isinstance(until, list) else (until,)))
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("CoDA (masked diffusion) gives no loglikelihood: use generate_until tasks")

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("CoDA (masked diffusion) gives no loglikelihood: use generate_until tasks")

    return CodaLMEval


def register() -> type:
    """Register `--model coda` with lm-eval; raises ImportError with INSTALL_HINT when it is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return _model_class()


def main(argv: list[str]) -> int:
    try:
        register()
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0
