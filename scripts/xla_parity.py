"""The tiny configs' pretrain -> midtrain -> SFT on the CPU eager back end and under torch_xla SPMD on 4
XLA CPU devices, side by side: loss curves, weight gaps, XLA compile counts per step, a kill-and-resume
of the XLA pretrain, and the hole each SFT export completes; plus a control run on the CPU (the same
batches in two micro-batches) that shows how far float reassociation alone moves the curve. Writes
OUT.json and OUT.png.

    bash scripts/xla_env.sh
    .venv-xla/bin/python scripts/xla_parity.py --out benchmarks/results/xla_parity

Both back ends run configs/tiny_{pretrain,midtrain,sft}.toml as shipped except: data and tokenizer built
here from the standard library (as the README's chain), objective.logits = "full" (static shapes; the
XLA back end refuses "masked"), one metrics record per step, and run.backend / run.device. Midtrain and
SFT start every run from the CPU run of the stage before, so each stage is compared on its own (a chain
would carry the previous stage's gap in); tests/xla runs the XLA-only chain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "midtrain", "sft")
# cpu_accum, the control: the same batches in 2 micro-batches of 4 rows on the CPU, mathematically the same
# run with its sums associated differently; its gap to "cpu" is what float reassociation alone does here
BACKENDS = {"cpu": ["run.device=cpu", "run.backend=single"], "xla": ["run.device=xla", "run.backend=xla"],
            "cpu_accum": ["run.device=cpu", "run.backend=single", "run.micro_batch_size=4"]}
NUM_DEVICES = 4


def build_inputs(work: Path) -> dict[str, Path]:
    from coda_train.data import write_shards
    from coda_train.testing import make_sft_shards, stdlib_dirs
    from coda_train.tokenizer_train import train_tokenizer_dir

    tok = train_tokenizer_dir(work / "tok", stdlib_dirs("json", "email"), vocab_size=1024)
    write_shards(stdlib_dirs("json", "email"), tok, work / "data-py", kind="text", progress=False)
    return {"tok": tok, "text": work / "data-py", "sft": make_sft_shards(work / "data-sft", tok, num_examples=256)}


def overrides(stage: str, backend: str, inputs: dict[str, Path], work: Path) -> list[str]:
    sets = [f"run.out_dir=\"{work / f'{backend}-{stage}'}\"", "objective.logits=full", "run.log_every=1",
            "run.progress=false", "run.tensorboard=false", *BACKENDS[backend]]
    data = inputs["sft"] if stage == "sft" else inputs["text"]
    sets.append(f"data.train=[\"{data}\"]")
    if stage == "pretrain":
        sets.append(f"model.tokenizer=\"{inputs['tok']}\"")
    else:
        previous = "pretrain" if stage == "midtrain" else "midtrain"  # the CPU run's: each stage compared alone
        sets.append(f"model.init=\"{work / f'cpu-{previous}'}\"")
    return sets


def command(stage: str, sets: list[str], resume: bool = False) -> list[str]:
    args = [sys.executable, "-m", "coda_train.cli", stage, "--config", str(REPO / "configs" / f"tiny_{stage}.toml")]
    for s in sets:
        args += ["--set", s]
    return args + (["--resume"] if resume else [])


def env() -> dict[str, str]:
    return {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": str(NUM_DEVICES), "PYTHONUNBUFFERED": "1"}


def train(stage: str, sets: list[str], resume: bool = False) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(command(stage, sets, resume), env=env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def train_killed(stage: str, sets: list[str], kill_after: str) -> None:
    """Start a run and SIGKILL it as soon as it reports the checkpoint `kill_after`."""
    proc = subprocess.Popen(command(stage, sets), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "saved checkpoint" in line and kill_after in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        sys.exit(f"the run to kill ended by itself (rc {proc.returncode})")


def weights(run_dir: Path):
    from safetensors.torch import load_file

    from coda_train.checkpointing import list_checkpoints

    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def compile_profile(records: list[dict], save_every: int) -> dict:
    """Compilations per step (cumulative counts differenced), split into warm-up, after-save and the rest."""
    deltas = {r["step"]: r["xla_compiles"] - p["xla_compiles"] for p, r in zip(records, records[1:])}
    after_save = {s: d for s, d in deltas.items() if save_every and (s - 1) % save_every == 0}
    rest = {s: d for s, d in deltas.items() if s not in after_save}
    runs = [r["xla_executions"] for r in records]
    return {"first_step": records[0]["xla_compiles"], "per_step": [records[0]["xla_compiles"]] +
            [deltas[s] for s in sorted(deltas)], "after_saves": after_save,
            "steps_after_warmup_that_compiled": sorted(s for s, d in rest.items() if d and s > 3),
            "executions_per_step_after_warmup": sorted({b - a for a, b in zip(runs[3:], runs[4:])})}


def completion(model_dir: Path) -> dict:
    from coda_model.checkpoint import load_model
    from coda_model.decode_config import DecodeConfig
    from coda_model.engine import Engine

    loaded = load_model(model_dir, device="cpu", dtype="float32")
    tok, engine = loaded.tokenizer, Engine(loaded)
    prefix, suffix = tok.encode("def dumps(obj, indent=None):\n    return "), tok.encode("\n\n\ndef loads(s):\n")
    last = list(engine.infill(prefix, suffix, length=16, config=DecodeConfig(steps=16), stop_when_ended=False))[-1]
    return {"tokens": last.tokens[0].tolist(), "text": engine.hole_text(last)}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 6.5), sharex="col", gridspec_kw={"height_ratios": [3, 2]})
    for col, stage in enumerate(STAGES):
        r = result["stages"][stage]
        steps = list(range(1, len(r["loss_cpu"]) + 1))
        ax = axes[0][col]
        ax.plot(steps, r["loss_cpu"], label="CPU eager (single)", lw=2.2, alpha=0.6)
        ax.plot(steps, r["loss_xla"], label=f"torch_xla SPMD, {NUM_DEVICES} CPU devices", lw=1, ls="--", color="k")
        ax.set_title(f"{stage}: configs/tiny_{stage}.toml")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        gap = axes[1][col]
        gap.semilogy(steps, [max(g, 1e-10) for g in r["rel_gap"]], ".", ms=4, color="k", label="XLA vs CPU")
        gap.semilogy(steps, [max(g, 1e-10) for g in r["control_rel_gap"]], "x", ms=3, color="tab:orange",
                     label="control: CPU, 2 micro-batches, vs CPU")
        gap.set_ylim(1e-10, 1)
        gap.set_xlabel("step")
        gap.set_ylabel("|loss gap| / loss (0 drawn at 1e-10)")
        gap.grid(alpha=0.3)
        gap.legend(fontsize=8)
    fig.suptitle("CoDA tiny model: the same run on the CPU eager back end and under torch_xla SPMD (float32)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/xla_parity", help="writes OUT.json and OUT.png")
    parser.add_argument("--work", help="run directory (default: a temp dir, removed afterwards)")
    args = parser.parse_args()
    from coda_train.config import load_config
    from coda_train.export import export
    from coda_train.metrics import read_metrics

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="coda-xla-parity-"))
    try:
        inputs = build_inputs(work)
        result = {"devices": NUM_DEVICES, "stages": {}}
        for stage in STAGES:
            entry = {}
            for backend in BACKENDS:
                entry[f"wall_s_{backend}"] = round(train(stage, overrides(stage, backend, inputs, work)), 1)
            ref, got = read_metrics(work / f"cpu-{stage}"), read_metrics(work / f"xla-{stage}")
            control = read_metrics(work / f"cpu_accum-{stage}")
            c = weights(work / f"cpu_accum-{stage}")
            a, b = weights(work / f"cpu-{stage}"), weights(work / f"xla-{stage}")
            save_every = load_config(REPO / "configs" / f"tiny_{stage}.toml").run.save_every
            entry.update(loss_cpu=[r["loss"] for r in ref], loss_xla=[r["loss"] for r in got],
                         rel_gap=[abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(ref, got)],
                         max_weight_gap=max((a[k] - b[k]).abs().max().item() for k in a),
                         identical_tensors=f"{sum(bool((a[k] == b[k]).all()) for k in a)}/{len(a)}",
                         compiles=compile_profile(got, save_every),
                         tokens_per_s_steady={"cpu": round(sum(r["tokens_per_s"] for r in ref[3:]) / len(ref[3:])),
                                              "xla": round(sum(r["tokens_per_s"] for r in got[3:]) / len(got[3:]))})
            entry["max_rel_gap"] = max(entry["rel_gap"])
            entry["control_rel_gap"] = [abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(ref, control)]
            entry["control_max_rel_gap"] = max(entry["control_rel_gap"])
            entry["control_max_weight_gap"] = max((a[k] - c[k]).abs().max().item() for k in a)
            entry["first_step_above_1e-6"] = {
                name: next((i + 1 for i, g in enumerate(entry[key]) if g > 1e-6), None)
                for name, key in (("xla", "rel_gap"), ("control", "control_rel_gap"))}
            result["stages"][stage] = entry
            print(f"{stage}: max |loss gap|/loss {entry['max_rel_gap']:.2e}, max weight gap "
                  f"{entry['max_weight_gap']:.2e} (control: {entry['control_max_rel_gap']:.2e}, "
                  f"{entry['control_max_weight_gap']:.2e}), compiles after warm-up at steps "
                  f"{entry['compiles']['steps_after_warmup_that_compiled']}", flush=True)
        # kill and resume under XLA: the pretrain again, killed after its step-50 checkpoint, resumed
        sets = overrides("pretrain", "xla", inputs, work)
        sets[0] = f"run.out_dir=\"{work / 'xla-pretrain-killed'}\""
        train_killed("pretrain", sets, "step-00000050")
        train("pretrain", sets, resume=True)
        a, b = weights(work / "xla-pretrain"), weights(work / "xla-pretrain-killed")
        la = {r["step"]: r["loss"] for r in read_metrics(work / "xla-pretrain")}
        lb = {r["step"]: r["loss"] for r in read_metrics(work / "xla-pretrain-killed")}
        result["resume"] = {"killed_after": "step-00000050", "weights_bit_exact": all(bool((a[k] == b[k]).all()) for k in a),
                            "losses_bit_exact": la == lb}
        print(f"resume: {result['resume']}", flush=True)
        holes = {backend: completion(export(work / f"{backend}-sft", work / f"{backend}-hf")) for backend in BACKENDS}
        result["completion"] = {**holes, "xla_same_as_cpu": holes["cpu"]["tokens"] == holes["xla"]["tokens"],
                                "control_same_as_cpu": holes["cpu"]["tokens"] == holes["cpu_accum"]["tokens"]}
        print(f"completion: {({k: v['text'] for k, v in holes.items()})}", flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        plot(result, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
