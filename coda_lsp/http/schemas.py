"""Request bodies of `/infill` (llama.cpp) and `/v1/completions` (OpenAI) -> one validated `HoleSpec`.

Each endpoint has a table of the fields it honours and a set it accepts and ignores because they mean
nothing for a diffusion model (docs/http.md lists both); any other field is refused, so a typo is a 400
with its name, not a silent default. Decode settings map onto `DecodeConfig` through `with_field`
(its one definition and validation); the server's default decode is `ServeConfig.decode`.

Extensions (both endpoints): `stream_denoise` (stream every denoise step's partial text as SSE
`event: denoise`), `decode` (an object of `DecodeConfig` fields: steps, alg, threshold, cache,
block_length, ...), `context_tokens` (token budget of extra + prefix + suffix).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from coda_model.decode_config import FIELD_NAMES, DecodeConfig

from coda_lsp.gate import GateConfig
from coda_lsp.http.config import ServeConfig
from coda_lsp.languages import canonical_language, spec_for


class BadRequest(ValueError):
    """A 4xx answer: `status` and a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HoleSpec:
    """What one request asks the model for, after validation."""

    extra: str                    # context placed before the prefix (other files' chunks)
    prefix: str                   # text before the hole (llama.cpp: input_prefix + prompt)
    suffix: str
    length: int                   # hole tokens: min(requested, ServeConfig.max_hole)
    decode: DecodeConfig
    num_candidates: int
    context_tokens: int
    stream: bool
    stream_denoise: bool
    stop: tuple[str, ...] = ()
    n_indent: int = 0             # cut the text before a later line indented less than this
    t_max_predict_ms: int = 0     # 0 = off; else answer with the finished lines once this has passed
    response_fields: Optional[tuple[str, ...]] = None
    gate: GateConfig = GateConfig()   # the confidence gate on what is answered (off = the raw text)

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys decode in one batch exactly as they would alone."""
        return (self.length, self.decode.key())


# --------------------------------------------------------------------------------------------- field readers
def _typed(name: str, value: Any, kinds: tuple, what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"'{name}' must be {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise BadRequest(f"'{name}' must be {what}, got {type(value).__name__}")
    return value


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def read(name: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        v = _typed(name, value, (int,), "an integer")
        if not lo <= v <= hi:
            raise BadRequest(f"'{name}' must be in [{lo}, {hi}], got {v}")
        return v
    return read


def _num(name: str, value: Any) -> float:
    return float(_typed(name, value, (int, float), "a number"))


def _bool(name: str, value: Any) -> bool:
    return _typed(name, value, (bool,), "true or false")


def _str(name: str, value: Any) -> str:
    return "" if value is None else _typed(name, value, (str,), "a string")


def _stop(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest(f"'{name}' must be a string or a list of strings")
    return tuple(s for s in value if s)


def _unit(name: str, value: Any) -> float:
    v = _num(name, value)
    if not 0.0 <= v <= 1.0:
        raise BadRequest(f"'{name}' must be in [0, 1], got {v}")
    return v


def _fields(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest(f"'{name}' must be a list of strings")
    return tuple(value)


def _extra(name: str, value: Any) -> str:
    """llama.cpp's input_extra [{filename, text}] -> one text; chunks with a filename get a commented header.

    Checked as llama-server checks it: `text` a string, `filename` (optional) a string, any other key
    ignored (llama.vim's ring chunks carry `time`)."""
    if value is None:
        return ""
    if not isinstance(value, list):
        raise BadRequest(f"'{name}' must be a list of {{filename, text}} objects")
    parts = []
    for i, chunk in enumerate(value):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str) \
                or not isinstance(chunk.get("filename", ""), str):
            raise BadRequest(f"'{name}[{i}]' must be an object with a string field text (and filename, if any, "
                             f"a string)")
        text, filename = chunk["text"], chunk.get("filename", "")
        if not text:
            continue
        if filename:   # names only label the chunk for the model: nothing is read from the server's disk
            comment = spec_for(canonical_language(None, filename)).comment
            text = f"{comment} Path: {filename}\n" + "".join(f"{comment} {ln}\n" for ln in text.splitlines()) + "\n"
        parts.append(text)
    return "".join(parts)


def _decode(base: DecodeConfig, value: Any, max_steps: int) -> DecodeConfig:
    if not isinstance(value, dict):
        raise BadRequest("'decode' must be an object of decode settings")
    config = base
    for key, raw in value.items():
        if key not in FIELD_NAMES:
            raise BadRequest(f"unknown decode setting {key!r} (known: {', '.join(FIELD_NAMES)})")
        try:
            config = config.with_field(key, raw)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"decode.{key}: {exc}") from None
    if config.steps > max_steps:
        raise BadRequest(f"decode.steps must be at most {max_steps}, got {config.steps}")
    return config


def _prompt(name: str, value: Any) -> str:
    """OpenAI's prompt: a string or a list holding one string."""
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], str):
            raise BadRequest(f"'{name}' must be a string (or a list of exactly one string)")
        return value[0]
    return _str(name, value)


# --------------------------------------------------------------------------------------------- the tables
# Fields each endpoint honours (name -> reader) and fields accepted but ignored (meaningless for diffusion).
INFILL_IGNORED = frozenset({
    "cache_prompt", "id_slot", "samplers", "t_max_prompt_ms", "n_keep", "n_cache_reuse", "n_probs", "min_p",
    "typical_p", "repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty", "dry_multiplier",
    "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers", "xtc_probability",
    "xtc_threshold", "mirostat", "mirostat_tau", "mirostat_eta", "ignore_eos", "min_keep", "return_tokens",
    "timings_per_token", "return_progress", "post_sampling_probs", "model", "dynatemp_range",
    "dynatemp_exponent", "top_n_sigma", "sse_ping_interval", "logit_bias"})
OPENAI_IGNORED = frozenset({"model", "user", "best_of", "frequency_penalty", "presence_penalty", "logit_bias",
                            "stream_options", "logprobs", "echo"})
_COMMON = {"stream_denoise": _bool, "decode": None, "context_tokens": None, "seed": None,
           "temperature": _num, "top_p": _num, "stream": _bool, "stop": _stop,
           "min_confidence": _unit, "min_shown_confidence": _unit}
INFILL_FIELDS = {**_COMMON, "input_prefix": _str, "input_suffix": _str, "input_extra": _extra, "prompt": _str,
                 "n_predict": None, "top_k": _int(0, 1 << 30), "n_indent": _int(0, 1 << 16),
                 "t_max_predict_ms": _int(0, 1 << 30), "response_fields": _fields, "n_cmpl": None}
OPENAI_FIELDS = {**_COMMON, "prompt": _prompt, "suffix": _str, "max_tokens": None, "n": None}


def _read(body: Any, table: dict, ignored: frozenset, cfg: ServeConfig) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = [k for k in body if k not in table and k not in ignored]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (docs/http.md lists the fields this server reads)")
    n_max = _int(1, cfg.max_candidates)
    readers = {**table, "n_predict": _int(-1, cfg.max_predict), "max_tokens": _int(0, cfg.max_predict),
               "n_cmpl": n_max, "n": n_max, "context_tokens": _int(16, cfg.max_context_tokens),
               "seed": _int(-1, 2**63 - 1), "decode": lambda _n, v: v}
    out = {}
    for key, value in body.items():
        if key in table and not (value is None and key in ("max_tokens", "n", "seed", "stop", "suffix")):
            out[key] = readers[key](key, value)
        if key == "echo" and value:
            raise BadRequest("'echo' is not supported: the answer holds only the hole's text")
    return out


def _decode_config(f: dict, cfg: ServeConfig) -> DecodeConfig:
    """Sampling fields over the server's decode: llama.cpp/OpenAI conventions mapped to DecodeConfig."""
    config = _decode(cfg.decode, f["decode"], cfg.max_steps) if "decode" in f else cfg.decode
    changes: dict[str, Any] = {}
    if "temperature" in f:
        changes["temperature"] = max(0.0, f["temperature"])          # <= 0 is greedy, as in llama.cpp
    if "top_p" in f:
        if not 0 < f["top_p"] <= 1:
            raise BadRequest(f"'top_p' must be in (0, 1], got {f['top_p']}")
        changes["top_p"] = None if f["top_p"] >= 1 else f["top_p"]    # 1.0 = off
    if "top_k" in f:
        changes["top_k"] = f["top_k"] or None                          # 0 = off
    if "seed" in f:
        changes["seed"] = None if f["seed"] == -1 else f["seed"]       # -1 = random
    return replace(config, **changes)


def _spec(f: dict, cfg: ServeConfig, *, extra: str, prefix: str, suffix: str, requested: int,
          num_candidates: int) -> HoleSpec:
    stream_denoise = f.get("stream_denoise", False)
    return HoleSpec(extra=extra, prefix=prefix, suffix=suffix, length=min(requested, cfg.max_hole),
                    decode=_decode_config(f, cfg), num_candidates=num_candidates,
                    context_tokens=f.get("context_tokens", cfg.context_tokens),
                    stream=f.get("stream", False) or stream_denoise, stream_denoise=stream_denoise,
                    stop=f.get("stop", ()), n_indent=f.get("n_indent", 0),
                    t_max_predict_ms=f.get("t_max_predict_ms", 0), response_fields=f.get("response_fields"),
                    gate=GateConfig(f.get("min_confidence", cfg.min_confidence),
                                    f.get("min_shown_confidence", cfg.min_shown_confidence)))


def parse_infill(body: Any, cfg: ServeConfig) -> HoleSpec:
    """llama.cpp `/infill`: model prefix = input_prefix + prompt (text after FIM_MID), suffix = input_suffix."""
    f = _read(body, INFILL_FIELDS, INFILL_IGNORED, cfg)
    n_predict = f.get("n_predict", -1)
    return _spec(f, cfg, extra=f.get("input_extra", ""), prefix=f.get("input_prefix", "") + f.get("prompt", ""),
                 suffix=f.get("input_suffix", ""), requested=cfg.max_hole if n_predict == -1 else n_predict,
                 num_candidates=f.get("n_cmpl", 1))


def parse_completion(body: Any, cfg: ServeConfig) -> HoleSpec:
    """OpenAI `/v1/completions` with `suffix`: fill-in-the-middle between prompt and suffix."""
    f = _read(body, OPENAI_FIELDS, OPENAI_IGNORED, cfg)
    if "prompt" not in f:
        raise BadRequest("'prompt' is required")
    return _spec(f, cfg, extra="", prefix=f["prompt"], suffix=f.get("suffix", ""),
                 requested=f.get("max_tokens", 16), num_candidates=f.get("n", 1))
