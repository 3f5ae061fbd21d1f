"""FSDP2 under torchrun (gloo, CPU): 2 processes give the same losses and weights as 1 on the same global
batch, and a 2-process checkpoint resumes in 1 process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from coda_train.checkpointing import list_checkpoints
from coda_train.config import _toml_value
from coda_train.metrics import read_metrics
from coda_train.testing import make_text_shards, make_tokenizer, tiny_config
from coda_train.trainer import Trainer


def test_two_fsdp_processes_match_one_process_and_resume_across_world_sizes(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    text = make_text_shards(tmp_path / "text", tok)
    kw = dict(run={"steps": 6, "batch_size": 4, "micro_batch_size": 1, "save_every": 3, "keep_checkpoints": 3,
                   "log_every": 1},
              optim={"name": "adafactor", "schedule": "linear", "lr": 1e-2, "warmup_steps": 2},
              objective={"block_masking_probability": 0.5, "prefix_probability": 0.2})
    one = tiny_config(tok, text, tmp_path / "one", **kw)  # 1 process: 4 accumulation steps of 1 row
    trainer = Trainer(one, "pretrain", log=lambda *_: None)
    trainer.run()
    two = tiny_config(tok, text, tmp_path / "two", **kw)  # 2 processes x 2 accumulation steps of 1 row
    args = [f"--set={s}.{k}={_toml_value(v)}" for s, vals in two.to_dict().items() for k, v in vals.items()
            if v is not None]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "coda_train.cli", "pretrain", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    la = [r["loss"] for r in read_metrics(tmp_path / "one")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "two")]
    assert len(la) == len(lb) == 6
    assert all(abs(a - b) <= 1e-5 * abs(a) for a, b in zip(la, lb)), (la, lb)
    ref = load_file(str(list_checkpoints(tmp_path / "one")[-1] / "model.safetensors"))
    got = load_file(str(list_checkpoints(tmp_path / "two")[-1] / "model.safetensors"))
    assert all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref)
    # resume the 2-process run from its step-3 checkpoint in a single process
    shutil.rmtree(list_checkpoints(tmp_path / "two")[-1])
    trainer = Trainer(two, "pretrain", resume=True, log=lambda *_: None)
    assert trainer.state.step == 3
    trainer.run()
    again = load_file(str(list_checkpoints(tmp_path / "two")[-1] / "model.safetensors"))
    assert all(torch.allclose(ref[k], again[k], atol=1e-5) for k in ref)
