"""Server settings: `ServerOptions`, and `SETTINGS`, the one table that maps every spelling of a setting.

camelCase on the wire (`initializationOptions`, `workspace/didChangeConfiguration`), snake_case in
Python, `--kebab-case` on the command line: each row of `SETTINGS` names the wire key, the field it
sets and how a raw value is converted; the CLI flags, the lenient LSP parsing and the editors' setting
lists are derived from it (tests/test_settings.py checks the editors against it). Decode settings live
in `ServerOptions.decode`, a `coda_model.DecodeConfig` whose defaults are `DecodeConfig.editor()`:
neither this module nor the editors restate them.

A bad value never stops the server: it keeps the previous value and the problem is reported as one
warning line (shown to the user by the server). The command line turns the same warning into an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from coda_model.decode_config import ALGORITHMS, CACHE_KINDS, DecodeConfig
from coda_model.edit_config import EditConfig

from coda_lsp.gate import GateConfig
from coda_lsp.stats import STATS_MODES

LINE_TOKENS = 24    # length budget of a rest-of-line hole (at most maxTokens)
DEVICES = ("auto", "cpu", "cuda", "mps")
NEXT_EDIT_MODES = ("on", "off", "manual")   # the nextEdit setting (coda_lsp.next_edit)
DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
QUANTIZE = ("auto", "none", "int8")


@dataclass(frozen=True)
class ServerOptions:
    model_path: Optional[str] = None     # CoDA directory; None = the embedded default model
    device: str = "auto"                 # auto | cpu | cuda | mps
    dtype: str = "auto"                  # auto | float32 | bfloat16; auto on a CPU = measured at load (coda_model.kernels)
    quantize: str = "auto"               # auto | none | int8 (CPU: int8 weights + per-token int8 activations)
    decode: DecodeConfig = field(default_factory=DecodeConfig.editor)   # how a hole is denoised
    max_tokens: int = 48                 # length budget (mask tokens) for block holes; line holes use min(LINE_TOKENS, this)
    debounce_ms: int = 75                # wait after an automatic trigger before running the model
    context_tokens: int = 1024           # budget for prefix + suffix + extra context
    enabled_languages: Optional[tuple[str, ...]] = None   # None = every language
    streaming: bool = False              # send coda/partialCompletion notifications
    speculate: bool = True               # after a completion, compute the one that follows accepting it
    threads: Optional[int] = None        # CPU threads for a request; None = OMP_NUM_THREADS, else measured at load
    context_cache_mb: int = 512          # context K/V kept across requests, all documents (0 = recompute every time)
    latency_budget_ms: Optional[int] = None   # measure at load, then fit context/steps/block to it (coda_lsp.calibrate)
    # confidence gate, defaults measured on three held-out sets of the default model (docs/suggestions.md)
    min_confidence: float = 0.9          # cut a suggestion before its first token below this
    min_shown_confidence: float = 0.0    # show nothing when the first line's mean confidence is below this
    stats: str = "on"                    # local acceptance statistics: on | off | code (also keep the text)
    # next edits (coda/nextEdit, coda_lsp.next_edit)
    next_edit: str = "on"                # on | off | manual (only when the editor asks by a key)
    next_edit_lines: int = 24            # window: a third above the cursor, the rest below (bounded cost)
    next_edit_min_confidence: float = EditConfig.min_confidence   # propose only edits this sure
    next_edit_debounce_ms: int = 400     # an automatic request waits this long (a settled edit, > debounceMs)

    @property
    def gate(self) -> GateConfig:
        return GateConfig(self.min_confidence, self.min_shown_confidence)
    engine: Optional[str] = None         # http://HOST:PORT of a `coda-lsp serve` that decodes; None = the local model
    api_key: Optional[str] = field(default=None, repr=False)   # the remote engine's key: from --api-key or
                                         # CODA_API_KEY only (not a setting, so it stays out of settings files)

    def language_enabled(self, language: str) -> bool:
        return self.enabled_languages is None or language in self.enabled_languages or "*" in self.enabled_languages

    def get(self, name: str) -> Any:
        """A field by its `SETTINGS` name: 'max_tokens' or 'decode.block_length'."""
        head, _, tail = name.partition(".")
        return getattr(self.decode, tail) if head == "decode" else getattr(self, head)


# ---------------------------------------------------------------------------------------- converters
def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 1:
        raise ValueError("expected a positive integer")
    return int(v)


def _non_negative_int(v: Any) -> int:
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 0:
        raise ValueError("expected an integer >= 0")
    return int(v)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return v.lower()
    return conv


def _optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None or (isinstance(v, str) and v.lower() in ("none", "null")) else conv(v)


def _languages(v: Any) -> Optional[tuple[str, ...]]:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.split(",")
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError("expected a list of language ids")
    return tuple(x.strip().lower() for x in v)


def _path(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError("expected a path string")
    return v


def _unit(v: Any) -> float:
    if isinstance(v, bool) or not 0 <= float(v) <= 1:
        raise ValueError("expected a number in [0, 1]")
    return float(v)
def _lines(v: Any) -> int:
    n = _positive_int(v)
    if n > 40:
        raise ValueError("expected at most 40 lines (the window's cost is bounded)")
    return n


def _url(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    if not isinstance(v, str) or not v.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL of a `coda-lsp serve`")
    return v.rstrip("/")


def _bool(v: Any) -> bool:
    if isinstance(v, str) and v.lower() in ("true", "false", "on", "off"):
        return v.lower() in ("true", "on")
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


# ---------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Setting:
    wire: str                                # camelCase key editors send
    name: str                                # ServerOptions field, or "decode.<DecodeConfig field>"
    help: str
    parse: Optional[Callable[[Any], Any]] = None   # raw -> value (ValueError = reason); decode.* use DecodeConfig
    flag: Optional[str] = None               # command-line flag; None = --kebab-case of `wire`; "" = no flag

    @property
    def cli_flag(self) -> str:
        if self.flag is not None:
            return self.flag
        return "--" + "".join("-" + c.lower() if c.isupper() else c for c in self.wire)

    @property
    def is_decode(self) -> bool:
        return self.name.startswith("decode.")


SETTINGS: tuple[Setting, ...] = (
    Setting("modelPath", "model_path", "model directory or Hugging Face repo id in the local cache (CoDA, Dream, "
                                       "LLaDA; default: the embedded default model)", _path, flag="--model"),
    Setting("device", "device", f"{' | '.join(DEVICES)}", _choice(DEVICES)),
    Setting("dtype", "dtype", "auto | float32 | bfloat16 (auto on a CPU: the fastest kernel measured at load that "
                              "agrees with fp32; fp16 is never used on a CPU)", _choice(DTYPES)),
    Setting("quantize", "quantize", "auto | none | int8: int8 weights and per-token int8 activations on a CPU "
                                    "(auto: used when measured fastest at load)", _choice(QUANTIZE)),
    Setting("steps", "decode.steps", "max denoise steps per hole"),
    Setting("maxTokens", "max_tokens", f"length budget of a block hole (line holes use min({LINE_TOKENS}, this))", _positive_int),
    Setting("algorithm", "decode.alg", f"unmasking order: {' | '.join(ALGORITHMS)}"),
    Setting("temperature", "decode.temperature", "sampling temperature (0 = greedy)"),
    Setting("threshold", "decode.threshold", "reveal every token at least this confident per step; 'none' = the "
                                              "fixed schedule only"),
    Setting("cache", "decode.cache", f"context K/V reuse within a block: {' | '.join(CACHE_KINDS)} (none = exact)"),
    Setting("blockLength", "decode.block_length", "with a cache, decode left to right in blocks of this many tokens"),
    Setting("vicinity", "decode.vicinity", "with a cache, a new block recomputes the decided block and this many "
                                           "tokens around it, not the whole context; 'none' = the whole context"),
    Setting("debounceMs", "debounce_ms", "wait after an automatic trigger before running the model",
            _non_negative_int),
    Setting("contextTokens", "context_tokens", "token budget for prefix + suffix + other files' snippets",
            _positive_int),
    Setting("enabledLanguages", "enabled_languages", "language ids to complete (comma-separated); default all",
            _languages),
    Setting("streaming", "streaming", "send coda/partialCompletion at every denoise step", _bool, flag=""),
    Setting("speculate", "speculate", "compute the completion after accepting the current one, before Tab",
            _bool, flag=""),
    Setting("threads", "threads", "CPU threads for a request the user waits on (default: OMP_NUM_THREADS, else "
                                  "the count measured fastest at load; speculation always runs on one)",
            _optional(_positive_int)),
    Setting("contextCacheMb", "context_cache_mb", "MB of context keys/values kept across requests (per document, "
                                                  "least recently used dropped first; 0 = off)", _non_negative_int),
    Setting("latencyBudgetMs", "latency_budget_ms", "measure this device at load and pick context tokens, steps and "
                                                    "block length so a warm request fits this many ms; none = the "
                                                    "settings as given", _optional(_positive_int)),
    Setting("minConfidence", "min_confidence", "confidence gate: a suggestion ends before its first token less "
                                               "sure than this (0 = never cut)", _unit),
    Setting("minShownConfidence", "min_shown_confidence", "confidence gate: show nothing when the first line's "
                                                          "mean token confidence is below this (0 = always show)", _unit),
    Setting("stats", "stats", f"local acceptance statistics (coda-lsp stats): {' | '.join(STATS_MODES)}",
            _choice(STATS_MODES), flag=""),
    Setting("nextEdit", "next_edit", f"next-edit suggestions after an edit: {' | '.join(NEXT_EDIT_MODES)} (manual = "
                                     "only on the editor's key)", _choice(NEXT_EDIT_MODES), flag=""),
    Setting("nextEditLines", "next_edit_lines", "lines of the window a next edit may change (a third above the "
                                                "cursor; at most 40)", _lines),
    Setting("nextEditMinConfidence", "next_edit_min_confidence", "next edits: propose only an edit whose least "
                                                                 "sure token is at least this", _unit),
    Setting("nextEditDebounceMs", "next_edit_debounce_ms", "next edits: wait this long after an edit before "
                                                           "running the model", _non_negative_int),
    Setting("engine", "engine", "URL of a `coda-lsp serve` that decodes instead of the local model (the key comes "
                                "from CODA_API_KEY)", _url),
)
BY_WIRE = {s.wire: s for s in SETTINGS}


def wire_defaults(options: Optional[ServerOptions] = None) -> dict[str, Any]:
    """{wireKey: value} of every setting (the server's defaults unless `options` is given)."""
    o = options or ServerOptions()
    return {s.wire: o.get(s.name) for s in SETTINGS}


def _apply(options: ServerOptions, setting: Setting, raw: Any) -> ServerOptions:
    if setting.is_decode:
        return replace(options, decode=options.decode.with_field(setting.name.split(".", 1)[1], raw))
    assert setting.parse is not None, setting
    return replace(options, **{setting.name: setting.parse(raw)})


def _keep(options: ServerOptions, previous: ServerOptions, setting: Setting) -> ServerOptions:
    """`options` with `setting` as it was in `previous`."""
    if setting.is_decode:
        field_name = setting.name.split(".", 1)[1]
        return replace(options, decode=replace(options.decode, **{field_name: getattr(previous.decode, field_name)}))
    return replace(options, **{setting.name: previous.get(setting.name)})


def settings_section(base: ServerOptions, previous: ServerOptions, raw: Any) -> tuple[ServerOptions, list[str]]:
    """The client's whole `coda` section as the truth (workspace/didChangeConfiguration): a key that is
    absent takes `base` (the server's defaults, command line included), so removing a setting resets it;
    a bad value keeps `previous`'s, with one warning, as in `merge_options`."""
    section = raw.get("coda") if isinstance(raw, dict) and isinstance(raw.get("coda"), dict) else raw
    if not isinstance(section, dict):
        return previous, merge_options(previous, raw)[1]
    start = base
    for key in section:
        if key in BY_WIRE:
            start = _keep(start, previous, BY_WIRE[key])
    return merge_options(start, section)


def merge_options(base: ServerOptions, raw: Any) -> tuple[ServerOptions, list[str]]:
    """New options with the valid keys of `raw` applied, and one warning per ignored key/value."""
    if raw is None:
        return base, []
    if isinstance(raw, dict) and isinstance(raw.get("coda"), dict):   # {"coda": {...}} settings sections
        raw = raw["coda"]
    if not isinstance(raw, dict):
        return base, [f"coda settings must be an object, got {type(raw).__name__}: ignored"]
    options, warnings = base, []
    for key, value in raw.items():
        setting = BY_WIRE.get(key)
        if setting is None:
            warnings.append(f"unknown coda setting {key!r} ignored (known: {', '.join(BY_WIRE)})")
            continue
        try:
            options = _apply(options, setting, value)
        except (TypeError, ValueError) as exc:
            warnings.append(f"coda setting {key}={value!r} ignored: {exc}")
    return options, warnings
