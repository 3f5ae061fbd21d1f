"""The torch_xla SPMD back end on 4 XLA CPU devices: the TPU program, run where there is no TPU.

Training runs go through `coda-train` in subprocesses (as on a pod, and so a run can be killed); the CPU
eager reference runs in this process on the same torch. Run with `bash scripts/test_xla.sh`.

Tolerance of the CPU-vs-XLA comparison (LOSS_RTOL, WEIGHT_ATOL): both run the same float32 math, but
XLA fuses and reorders reductions and SPMD splits the batch and the parameters over 4 devices, so sums
are associated differently (~1 ulp, 6e-8 relative, per reduction). Over the 40-step chain below the
measured loss gap stays at 1-2 ulps (at most 1.0e-7 relative); LOSS_RTOL is 100x that. Weights drift
further (measured up to 1.6e-5 after the SFT stage): AdamW and Adafactor divide each update by the
gradient's own running scale, so where a gradient is mostly rounding its rounding moves the weight by
an lr-sized step. A numerical fault is far outside both bounds (a dropped micro-batch halves a step's
loss sum; a stale optimizer state changes every update by lr-sized amounts); placement faults (a wrong
shard, a misplaced mark_step) leave the numbers alone, and the sharding test and the compile and
execution counts are what catch them. Longer runs can leave the ulp regime
after a gradient spike, exactly as a CPU run with its batch split into two micro-batches does
(scripts/xla_parity.py, benchmarks/results/xla_parity.png), which is why the test stays short.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coda_model.checkpoint import load_model
from coda_model.decode_config import DecodeConfig
from coda_model.engine import Engine
from coda_train.checkpointing import list_checkpoints
from coda_train.config import ConfigError, _toml_value
from coda_train.export import export
from coda_train.metrics import read_metrics
from coda_train.testing import make_sft_shards, make_text_shards, make_tokenizer, tiny_config
from coda_train.trainer import Trainer

LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-4
BF16_LOSS_RTOL = 2e-3
WARMUP_STEPS = 3  # graphs of their own: lr = 0 and Adafactor's beta2 = 0 are XLA constants, other values data
XLA = {"backend": "xla", "device": "xla"}
NUM_DEVICES = int(os.environ["CPU_NUM_DEVICES"])  # set by conftest.py


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("xla-assets")
    tok = make_tokenizer(root / "tok")
    return root, tok, make_text_shards(root / "text", tok), make_sft_shards(root / "sft", tok)


def stage_configs(tok, text, sft, root: Path, kind: str, run_extra: dict) -> list[tuple[str, object]]:
    """pretrain -> midtrain -> SFT on the tiny test model, each stage starting from the previous one's
    run; `kind` names the run directories. Batches of 8 rows in micro-batches of 4 (2 accumulation steps
    on 4 devices, one row per device), full logits (static shapes)."""
    run = {"batch_size": 8, "micro_batch_size": 4, "log_every": 1, **run_extra}
    pre = tiny_config(tok, text, root / f"{kind}-pre", run={**run, "steps": 16}, data={"packing": "segments"},
                      optim={"name": "adafactor", "schedule": "linear", "warmup_steps": 3, "lr": 1e-2},
                      objective={"logits": "full", "prefix_probability": 0.2, "truncate_probability": 0.2,
                                 "block_masking_probability": 0.5, "block_mode": "batch", "mask_block_sizes": [2, 4]})
    mid = tiny_config(tok, text, root / f"{kind}-mid", model={"init": str(root / f"{kind}-pre")},
                      run={**run, "steps": 12}, data={"epoch_rows": 16},  # 6 epochs of 2 steps: the curriculum moves
                      optim={"name": "adafactor", "schedule": "linear", "warmup_steps": 2, "lr": 5e-3},
                      objective={"logits": "full", "sampling_eps": [0.001, 0.25, 0.5], "prefix_probability": [0.05, 0.2],
                                 "truncate_probability": [0.05, 0.2], "block_masking_probability": [0.1, 0.3],
                                 "mask_block_sizes": [2, 4, 8], "block_mode": "row"})
    sft_cfg = tiny_config(tok, sft, root / f"{kind}-sft", model={"init": str(root / f"{kind}-mid")},
                          data={"seq_len": 128}, run={**run, "steps": 12},
                          optim={"name": "adamw", "schedule": "cosine", "warmup_ratio": 0.1, "lr": 1e-3},
                          objective={"logits": "full", "progress_src_mask_ratio": 0.05})
    return [("pretrain", pre), ("midtrain", mid), ("sft", sft_cfg)]


def cli_args(stage: str, cfg) -> list[str]:
    sets = [f"--set={s}.{k}={_toml_value(v)}" for s, values in cfg.to_dict().items() for k, v in values.items()
            if v is not None]
    return [sys.executable, "-m", "coda_train.cli", stage, *sets]


def run_xla(stage: str, cfg, cwd: Path, resume: bool = False) -> str:
    proc = subprocess.run(cli_args(stage, cfg) + (["--resume"] if resume else []), cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def run_cpu(stage: str, cfg, resume: bool = False) -> None:
    trainer = Trainer(cfg, stage, resume=resume, log=lambda *_: None)
    try:
        trainer.run()
    finally:
        trainer.close()


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run_dir)[-1] / "model.safetensors"))


def step_compiles(records: list[dict], after: int, save_every: int = 0) -> list[int]:
    """XLA compilations during each step after step `after` (counts are cumulative per process), leaving
    out steps that follow a checkpoint save: a save's host reads compile gather programs, once per shape."""
    by_step = {r["step"]: r for r in records}
    return [r["xla_compiles"] - by_step[r["step"] - 1]["xla_compiles"] for r in records
            if r["step"] - 1 > after and not (save_every and (r["step"] - 1) % save_every == 0)]


def hole(model_dir: Path) -> list[int]:
    loaded = load_model(model_dir, device="cpu", dtype="float32")
    tok = loaded.tokenizer
    prefix, suffix = tok.encode("def dumps(obj, indent=None):\n    return "), tok.encode("\n\n\ndef loads(s):\n")
    states = list(Engine(loaded).infill(prefix, suffix, length=12, config=DecodeConfig(steps=12),
                                        stop_when_ended=False))
    assert states[-1].done and not states[-1].masked.any()
    return states[-1].tokens[0].tolist()


def test_xla_backend_shards_parameters_and_optimizer_state_on_the_1d_fsdp_plan(assets, tmp_path):
    import torch_xla

    root, tok, text, _ = assets
    cfg = tiny_config(tok, text, tmp_path / "r", run={**XLA, "steps": 1, "batch_size": 4, "peak_tflops": 1.0},
                      optim={"name": "adafactor", "lr": 1e-2}, objective={"logits": "full"})
    trainer = Trainer(cfg, "pretrain", log=lambda *_: None)
    assert trainer.backend.num_devices == NUM_DEVICES and trainer.backend.world == 1  # one SPMD program
    assert trainer._mfu(1e6) == pytest.approx(1e6 * trainer.flops_per_token / (1e12 * NUM_DEVICES))  # all chips
    trainer.train_step(0)
    spec = torch_xla._XLAC._get_xla_sharding_spec
    split = f"devices=[{NUM_DEVICES},1]"  # dim 0 over the 4 devices
    named = dict(trainer.model.named_parameters())
    assert split in spec(named["model.embed_tokens.weight"])
    assert split in spec(named["model.layers.0.self_attn.q_proj.weight"])
    assert f"devices=[1,{NUM_DEVICES}]" in spec(named["model.layers.0.self_attn.k_proj.weight"])
    assert f"devices=[{NUM_DEVICES}]" in spec(named["model.norm.weight"])
    b, opt = trainer.backend, trainer.optimizer
    saved = b.optim_state_dict(trainer.raw_model, opt)
    assert set(saved["state"]) == set(named) and saved["param_groups"][0]["params"] == list(named)  # by name
    b.load_optim_state_dict(trainer.raw_model, opt, saved)  # as a resume does: fresh device data from the host
    for p, st in ((named["model.layers.0.mlp.down_proj.weight"], f"devices=[{NUM_DEVICES}]"),  # split on dim 1
                  (named["model.layers.0.mlp.up_proj.weight"], "replicated")):           # split on dim 0
        state = opt.state[p]
        assert st in spec(state["exp_avg_sq_col"])  # the column statistic follows the parameter's dim 1
        assert torch.equal(state["exp_avg_sq_col"].cpu(), saved["state"][next(n for n, q in named.items() if q is p)]
                           ["exp_avg_sq_col"])
    assert f"devices=[{NUM_DEVICES}]" in spec(opt.state[named["model.layers.0.mlp.up_proj.weight"]]["exp_avg_sq_row"])
    trainer.close()


def test_xla_refuses_noise_dependent_logit_shapes_before_compute(assets, tmp_path):
    root, tok, text, _ = assets
    cfg = tiny_config(tok, text, tmp_path / "m", run=XLA, objective={"logits": "masked"})
    with pytest.raises(ConfigError, match="objective.logits.*recompile"):
        Trainer(cfg, "pretrain", log=lambda *_: None)
    assert not (tmp_path / "m").exists()


def test_xla_pretrain_midtrain_sft_follow_the_cpu_curves_compile_once_and_export_the_same_completion(assets, tmp_path):
    root, tok, text, sft = assets
    cpu = stage_configs(tok, text, sft, tmp_path, "cpu", {})
    xla = stage_configs(tok, text, sft, tmp_path, "xla", XLA)
    for (stage, c), (_, x) in zip(cpu, xla):
        run_cpu(stage, c)
        run_xla(stage, x, tmp_path)
        ref, got = read_metrics(c.run.out_dir), read_metrics(x.run.out_dir)
        assert [r["step"] for r in ref] == [r["step"] for r in got] == list(range(1, c.run.steps + 1))
        gaps = [abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(ref, got)]
        a, b = final_weights(c.run.out_dir), final_weights(x.run.out_dir)
        assert a.keys() == b.keys()
        weight_gap = max((a[k] - b[k]).abs().max().item() for k in a)
        print(f"{stage}: max loss gap {max(gaps):.1e} (relative), max weight gap {weight_gap:.1e}")  # pytest -s
        assert max(gaps) <= LOSS_RTOL, (stage, gaps)
        assert weight_gap <= WEIGHT_ATOL, stage
        assert step_compiles(got, WARMUP_STEPS) == [0] * (x.run.steps - WARMUP_STEPS - 1), (stage, got)
        runs = [r["xla_executions"] for r in got if r["step"] > WARMUP_STEPS]
        assert len(set(b - a for a, b in zip(runs, runs[1:]))) == 1, (stage, runs)  # the same graphs every step
    out_cpu = export(tmp_path / "cpu-sft", tmp_path / "cpu-hf")
    out_xla = export(tmp_path / "xla-sft", tmp_path / "xla-hf")
    assert hole(out_xla) == hole(out_cpu)
    src = tmp_path / "f.py"
    src.write_text("import json\n\ndef dump(obj):\n    return json.\n")
    served = [subprocess.run([sys.executable, "-m", "coda_lsp.cli", "complete", f"{src}:4:17", "--model", str(out),
                              "--dtype", "float32", "--min-confidence", "0", "--min-shown-confidence", "0",
                              "--show-steps"], capture_output=True, text=True, timeout=300) for out in (out_cpu, out_xla)]
    # what coda-lsp serves from each export: the same denoising steps and the same answer (1 = "nothing usable")
    assert served[0].returncode in (0, 1) and served[1].returncode == served[0].returncode, served[1].stderr[-2000:]
    steps = [[line for line in p.stderr.splitlines() if line.startswith("step ")] for p in served]
    assert len(steps[0]) >= 4 and steps[1] == steps[0] and served[1].stdout == served[0].stdout


def test_xla_resume_after_kill_is_bit_exact_and_the_checkpoint_resumes_on_cpu(assets, tmp_path):
    root, tok, text, _ = assets
    kw = dict(run={**XLA, "steps": 24, "batch_size": 8, "micro_batch_size": 4, "save_every": 4,
                   "keep_checkpoints": 10, "log_every": 1},
              optim={"name": "adafactor", "schedule": "linear", "warmup_steps": 3, "lr": 1e-2},
              objective={"logits": "full", "prefix_probability": 0.2, "truncate_probability": 0.2,
                         "block_masking_probability": 0.3})
    straight = tiny_config(tok, text, tmp_path / "straight", **kw)
    run_xla("pretrain", straight, tmp_path)
    killed = tiny_config(tok, text, tmp_path / "killed", **kw)
    proc = subprocess.Popen(cli_args("pretrain", killed), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # the event "a mid-run checkpoint exists", then kill -9
        if "saved checkpoint" in line and "step-00000008" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list_checkpoints(tmp_path / "killed")[-1].name != "step-00000024"
    step8 = tmp_path / "killed" / "checkpoints" / "step-00000008"
    shutil.copytree(step8, tmp_path / "on-cpu" / "checkpoints" / step8.name)
    for ckpt in list_checkpoints(tmp_path / "killed"):
        if ckpt.name > step8.name:  # the kill may land after a later save: resume from step 8 exactly
            shutil.rmtree(ckpt)
    out = run_xla("pretrain", killed, tmp_path, resume=True)
    assert "resumed from" in out and "step 8" in out
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight")}
    records = read_metrics(tmp_path / "killed")
    assert la == {r["step"]: r["loss"] for r in records}
    assert set(step_compiles(read_metrics(tmp_path / "straight"), WARMUP_STEPS, save_every=4)) == {0}
    assert set(step_compiles(records, 9, save_every=4)) == {0}  # the resumed process: its first step compiles
    # the same checkpoint continues on the CPU back end: the optimizer state has one layout everywhere
    on_cpu = tiny_config(tok, text, tmp_path / "on-cpu", **{**kw, "run": {**kw["run"], "device": "cpu",
                                                                           "backend": "single"}})
    run_cpu("pretrain", on_cpu, resume=True)
    lc = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "on-cpu")}
    assert sorted(lc) == list(range(9, 25))
    assert all(abs(lc[s] - la[s]) <= LOSS_RTOL * la[s] for s in lc), [(s, lc[s], la[s]) for s in lc]
    c = final_weights(tmp_path / "on-cpu")
    assert max((a[k] - c[k]).abs().max().item() for k in a) <= WEIGHT_ATOL


def test_xla_runs_the_tpu_recipe_switches_bf16_remat_no_clip_without_per_step_compiles(assets, tmp_path):
    """configs/coda_1p7b_pretrain_tpu.toml's settings on the tiny model: pure bf16 parameters, remat of every
    decoder layer, no gradient clipping, segment attention, the whole global batch in one micro-batch."""
    root, tok, text, _ = assets
    kw = dict(model={"dtype": "bfloat16", "gradient_checkpointing": True}, data={"packing": "segments"},
              optim={"name": "adafactor", "schedule": "linear", "warmup_steps": 2, "lr": 3e-3, "grad_clip": 0.0},
              objective={"logits": "full", "prefix_probability": 0.01, "truncate_probability": 0.01,
                         "block_masking_probability": 0.01, "mask_block_sizes": [2, 4, 8], "block_mode": "batch"})
    run = {"steps": 10, "batch_size": 8, "micro_batch_size": 8, "log_every": 1}
    cpu = tiny_config(tok, text, tmp_path / "cpu", run=run, **kw)
    xla = tiny_config(tok, text, tmp_path / "xla", run={**run, **XLA}, **kw)
    run_cpu("pretrain", cpu)
    run_xla("pretrain", xla, tmp_path)
    ref, got = read_metrics(tmp_path / "cpu"), read_metrics(tmp_path / "xla")
    assert step_compiles(got, WARMUP_STEPS) == [0] * (xla.run.steps - WARMUP_STEPS - 1), got
    assert final_weights(tmp_path / "xla")["lm_head.weight"].dtype == torch.bfloat16
    # bf16 keeps 8 significant bits (rounding up to 2^-8 = 3.9e-3 per op) and XLA's CPU compiler may keep
    # fp32 inside a fusion where eager rounds: the two agree to bf16 precision, not float32's (measured
    # 3.5e-5 over these 10 steps; the bound is half a bf16 rounding step)
    gaps = [abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(ref, got)]
    print(f"bf16: max loss gap {max(gaps):.1e} (relative)")  # pytest -s
    assert max(gaps) <= BF16_LOSS_RTOL, gaps
