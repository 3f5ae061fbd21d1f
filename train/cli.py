"""`coda-train`: tokenizer, data, pretrain / midtrain / sft, adapt, export, plot.

A CPU-sized chain (minutes):

    coda-train tokenizer --out runs/tok --vocab-size 1024 /usr/lib/python3.11/json
    coda-train data --tokenizer runs/tok --out runs/data/py /usr/lib/python3.11/json /usr/lib/python3.11/email
    coda-train pretrain --config configs/tiny_pretrain.toml --set model.tokenizer=runs/tok
    coda-train export runs/tiny-pretrain --out runs/tiny-hf
    coda-train plot runs/tiny-pretrain

Multi-GPU: `torchrun --nproc-per-node 8 -m coda_train.cli pretrain --config ...` (FSDP2).
TPU: see `train/backends/xla.py`.
"""

from __future__ import annotations

import argparse
import sys

from coda_model.errors import ModelLoadError


def _add_train(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", help="TOML config (configs/*.toml); defaults are used when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in run.out_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coda-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tokenizer", help="train a small CoDA-style byte-level BPE tokenizer")
    p.add_argument("inputs", nargs="+", help="files or directories of text")
    p.add_argument("--out", required=True)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--suffix", action="append", default=[], help="only files with this suffix (e.g. .py)")

    p = sub.add_parser("data", help="tokenize files (or hf:NAME[:SPLIT]) into memory-mapped token shards")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--tokenizer", required=True, help="tokenizer (or CoDA model) directory")
    p.add_argument("--out", required=True)
    p.add_argument("--kind", choices=("text", "sft"), default="text")
    p.add_argument("--shard-tokens", type=int, default=1 << 24)
    p.add_argument("--suffix", action="append", default=[])
    p.add_argument("--fields", nargs=2, metavar=("PROMPT", "RESPONSE"),
                   help="SFT JSONL field names (default instruction/output or prompt/response)")
    p.add_argument("--no-progress", action="store_true")

    _add_train(sub, "pretrain", "pre-train (diffusion or AR objective) from random or adapted weights")
    _add_train(sub, "midtrain", "mid-train with the masking curriculum (starts from model.init)")
    _add_train(sub, "sft", "supervised fine-tuning: prompt never masked, trailing pads trained")

    p = sub.add_parser("adapt", help="AR Qwen3-format checkpoint -> CoDA directory (same weights, mask token)")
    p.add_argument("--from", dest="src", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mask-init", choices=("auto", "keep", "mean", "zero"), default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    p = sub.add_parser("export", help="training checkpoint -> Hugging Face CoDA directory")
    p.add_argument("run", help="run directory (newest intact checkpoint) or a checkpoint directory")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")

    p = sub.add_parser("plot", help="loss and learning-rate curves of a run as PNG")
    p.add_argument("run")
    p.add_argument("--out", help="PNG path (default RUN/curves.png)")
    return parser


def run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "tokenizer":
        from coda_train.tokenizer_train import train_tokenizer_dir  # noqa: PLC0415

        out = train_tokenizer_dir(args.out, args.inputs, vocab_size=args.vocab_size, suffixes=tuple(args.suffix))
        print(f"tokenizer written to {out}")
    elif cmd == "data":
        from coda_train.data import write_shards  # noqa: PLC0415

        index = write_shards(args.inputs, args.tokenizer, args.out, kind=args.kind, shard_tokens=args.shard_tokens,
                             suffixes=tuple(args.suffix), progress=not args.no_progress,
                             fields=tuple(args.fields) if args.fields else None)
        print(f"{index['num_tokens']:,} tokens in {len(index['shards'])} shard(s), {index['docs_done']:,} documents "
              f"-> {args.out}")
    elif cmd in ("pretrain", "midtrain", "sft"):
        from coda_train.config import load_config  # noqa: PLC0415
        from coda_train.trainer import Trainer  # noqa: PLC0415

        cfg = load_config(args.config, args.overrides)
        trainer = Trainer(cfg, cmd, resume=args.resume)
        try:
            trainer.run()
        finally:
            trainer.close()
    elif cmd == "adapt":
        from coda_train.adapt import adapt  # noqa: PLC0415

        print(f"CoDA model written to {adapt(args.src, args.out, mask_init=args.mask_init, dtype=args.dtype)}")
    elif cmd == "export":
        from coda_train.export import export  # noqa: PLC0415

        print(f"exported to {export(args.run, args.out, dtype=args.dtype)}")
    elif cmd == "plot":
        from coda_train.metrics import plot_run  # noqa: PLC0415

        print(f"wrote {plot_run(args.run, args.out)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from coda_train.checkpointing import CheckpointError  # noqa: PLC0415
    from coda_train.config import ConfigError  # noqa: PLC0415
    from coda_train.data import DataError  # noqa: PLC0415

    try:
        return run(args)
    except (ConfigError, DataError, CheckpointError, ModelLoadError, FileNotFoundError, FloatingPointError) as exc:
        print(f"coda-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("coda-train: interrupted (the last checkpoint is intact; rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
