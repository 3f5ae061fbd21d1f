"""Training configuration: TOML files parsed into typed dataclasses.

A config file has the sections `[model]`, `[data]`, `[objective]`, `[optim]` and `[run]`; every key
maps to a field below. Parsing is strict so a typo never silently trains the wrong thing: an unknown
key or a value of the wrong type raises `ConfigError` naming the key (`optim.lr`). `--set k=v`
overrides use the same dotted names and TOML value syntax (`--set optim.lr=3e-4`,
`--set objective.sampling_eps=[0.001,0.25]`); a bare word is taken as a string.

Curriculum fields (`sampling_eps`, the three masking probabilities) accept a number or a list indexed by
epoch (`list[epoch % len(list)]`), as CoDA's released config does (spec 3.6).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

Curriculum = Union[float, list[float]]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class ModelConfig:
    init: str = "random"  # "random" (from the shape below), or a path: HF CoDA dir, run dir or checkpoint dir
    tokenizer: Optional[str] = None  # tokenizer dir (needed for init="random"; default: the init dir's)
    preset: str = "tiny"  # shape preset for init="random": tiny | coda_1p7b
    hidden_size: Optional[int] = None  # overrides of the preset (None = keep the preset's)
    intermediate_size: Optional[int] = None
    num_hidden_layers: Optional[int] = None
    num_attention_heads: Optional[int] = None
    num_key_value_heads: Optional[int] = None
    head_dim: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    vocab_size: Optional[int] = None  # random init: embedding rows (>= the tokenizer's ids; e.g. 151936 like Qwen3)
    vocab_multiple: int = 64  # random init without vocab_size: round the tokenizer's vocab up to this multiple
    init_std: float = 0.02  # random init: N(0, std)
    dtype: str = "float32"  # parameter dtype: float32 | bfloat16 (the TPU runs were pure bf16)
    gradient_checkpointing: bool = False  # recompute each decoder layer in backward (saves activation memory)
    compile: bool = False  # torch.compile the model (for GPUs; also runs on CPU, tested against eager)


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # shard directories written by `coda-train data`
    seq_len: int = 128  # tokens per row
    packing: str = "concat"  # concat: attend across packed documents | segments: attention stays inside a document
    shuffle: bool = True  # shuffle rows each epoch (seeded by run.seed and the epoch)
    epoch_rows: int = 0  # rows per "epoch" (a fresh random subset each epoch); 0 = all rows. Compresses
    #                      an epoch-indexed curriculum into a short run
    sft_max_len_policy: str = "drop"  # SFT rows longer than seq_len: drop (CoDA's code) | truncate (the paper's text)


@dataclass
class ObjectiveConfig:
    kind: str = "diffusion"  # diffusion (CoDA's masked objective) | ar (causal next-token loss)
    sampling_eps: Curriculum = 0.001  # minimum noise level: sigma ~ U[eps, 1]
    prefix_probability: Curriculum = 0.0  # S1: per row, an unmaskable random prefix
    truncate_probability: Curriculum = 0.0  # S2: per row (not S1 rows), a random suffix replaced by pads
    block_masking_probability: Curriculum = 0.0  # S3: contiguous spans; how it is applied is block_mode
    mask_block_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # S3 span sizes k
    block_mode: str = "switch"  # switch: any p>0 masks every batch in blocks (CoDA's code) | batch: per batch w.p. p (paper) | row: per row w.p. p
    infill_pad_probability: float = 0.0  # ours: per row, a hole whose tail is padding (teaches early hole ends)
    max_infill_len: int = 64  # longest hole budget for infill-pad rows
    fim_probability: float = 0.0  # per row, rewrite as <|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>m (PSM)
    logits: str = "masked"  # masked: lm_head only where a loss is taken | full: every position (static shapes, XLA)
    progress_src_mask_ratio: float = 0.0  # SFT stage 1: prompt conditioning grows over this fraction of the steps


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | adafactor (HF semantics: relative_step=False, scale_parameter=False)
    lr: float = 3e-4  # peak learning rate
    schedule: str = "cosine"  # linear | cosine | constant (each after warm-up; linear/cosine decay to min_lr_ratio*lr)
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps == 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 = off (the TPU runs used none)


@dataclass
class RunConfig:
    out_dir: str = "runs/tiny"  # checkpoints/, metrics.jsonl, config.toml go here
    steps: int = 100  # optimizer steps
    batch_size: int = 8  # global batch in rows (all ranks, all accumulation steps)
    micro_batch_size: int = 0  # rows per forward per rank; 0 = batch_size / world size (no accumulation)
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | xla
    backend: str = "auto"  # auto | single | fsdp | xla
    precision: str = "fp32"  # fp32 | bf16 autocast (GPU, and CPUs with bf16 units: ~1.3x here; pure bf16 params ~1.7x)
    threads: int = 0  # CPU threads for torch (0 = torch's default). On a shared, busy CPU 1 can be >10x faster
    log_every: int = 10
    save_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    progress: bool = True  # tqdm progress bar (rank 0)
    peak_tflops: float = 0.0  # device peak for MFU; 0 = guess from the device name
    tensorboard: bool = True  # also log to TensorBoard when installed
    wandb: bool = False  # also log to Weights & Biases when installed


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """Inverse of `load_config` (used to store the resolved config beside the run)."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is not None:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)


CHOICES = {
    "model.preset": ("tiny", "coda_1p7b"), "model.dtype": ("float32", "bfloat16"),
    "data.packing": ("concat", "segments"), "data.sft_max_len_policy": ("drop", "truncate"),
    "objective.kind": ("diffusion", "ar"), "objective.block_mode": ("switch", "batch", "row"),
    "objective.logits": ("masked", "full"), "optim.name": ("adamw", "adafactor"),
    "optim.schedule": ("linear", "cosine", "constant"), "run.device": ("auto", "cpu", "cuda", "xla"),
    "run.backend": ("auto", "single", "fsdp", "xla"), "run.precision": ("fp32", "bf16"),
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp` (int -> float only), or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _check_type(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected {_type_name(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r} has the wrong type: expected {_type_name(tp)}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected {_type_name(tp)}")
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "nothing", float: "a number", int: "an integer", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _section_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from nested dicts, rejecting unknown keys and wrong types."""
    sections = _section_types(TrainConfig)
    built = {}
    for name, value in data.items():
        if name not in sections:
            raise ConfigError(f"unknown config section [{name}]: sections are {', '.join(sections)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a [{name}] table")
    for name, cls in sections.items():
        values = data.get(name, {})
        hints = _section_types(cls)
        kwargs = {}
        for key, value in values.items():
            full = f"{name}.{key}"
            if key not in hints:
                raise ConfigError(f"unknown config key {full}: valid keys in [{name}] are {', '.join(hints)}")
            kwargs[key] = _check_type(full, value, hints[key])
            if full in CHOICES and kwargs[key] not in CHOICES[full]:
                raise ConfigError(f"{full} = {kwargs[key]!r} is not one of {', '.join(CHOICES[full])}")
        built[name] = cls(**kwargs)
    cfg = TrainConfig(**built)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that are cheap and catch mistakes before any compute is spent."""
    checks = [
        (cfg.data.seq_len >= 8, "data.seq_len must be at least 8"),
        (cfg.run.steps >= 1, "run.steps must be at least 1"),
        (cfg.run.batch_size >= 1, "run.batch_size must be at least 1"),
        (cfg.run.micro_batch_size >= 0, "run.micro_batch_size must be >= 0"),
        (cfg.run.threads >= 0, "run.threads must be >= 0"),
        (cfg.optim.lr > 0, "optim.lr must be positive"),
        (len(cfg.optim.betas) == 2, "optim.betas must have two numbers"),
        (all(k >= 1 for k in cfg.objective.mask_block_sizes), "objective.mask_block_sizes must be positive"),
        (0 <= cfg.objective.infill_pad_probability <= 1, "objective.infill_pad_probability must be in [0, 1]"),
        (0 <= cfg.objective.fim_probability <= 1, "objective.fim_probability must be in [0, 1]"),
    ]
    for name in ("sampling_eps", "prefix_probability", "truncate_probability", "block_masking_probability"):
        value = getattr(cfg.objective, name)
        values = value if isinstance(value, list) else [value]
        checks.append((len(values) > 0 and all(0 <= v <= 1 for v in values), f"objective.{name} values must be in [0, 1]"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=3e-4' -> ('optim.lr', 3e-4). Values use TOML syntax; a bare word is a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        if len(parts) != 2:
            raise ConfigError(f"--set {item!r}: keys look like section.key (e.g. optim.lr)")
        data.setdefault(parts[0], {})
        if not isinstance(data[parts[0]], dict):
            raise ConfigError(f"--set {item!r}: {parts[0]} is not a section")
        data[parts[0]][parts[1]] = value
    return data


def load_config(path: Optional[str | Path], overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML config (or start from defaults when `path` is None) and apply `--set` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass --config configs/<name>.toml")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return config_from_dict(apply_overrides(data, list(overrides)))


def at_epoch(value: Curriculum, epoch: int) -> float:
    """Resolve an epoch-indexed curriculum value (CoDA: list[epoch % len(list)])."""
    if isinstance(value, list):
        return float(value[epoch % len(value)])
    return float(value)
