"""End to end on CPU: tokenizer -> shards -> pretrain -> midtrain -> SFT -> export -> load, resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coda_model.checkpoint import load_model
from coda_train.build import build_model
from coda_train.checkpointing import CheckpointError, find_checkpoint, list_checkpoints
from coda_train.config import ConfigError
from coda_train.data import DataError, TokenStore
from coda_train.loader import RowSource
from coda_train.masking import MaskingSettings, SpecialIds, noise_batch
from coda_train.metrics import plot_run, read_metrics
from coda_train.objective import diffusion_loss_sum
from coda_train.testing import make_sft_shards, make_text_shards, make_tokenizer, tiny_config
from coda_train.trainer import Trainer


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-assets")
    tok = make_tokenizer(root / "tok")
    text = make_text_shards(root / "text", tok)
    sft = make_sft_shards(root / "sft", tok)
    return root, tok, text, sft


def train(cfg, stage="pretrain", resume=False):
    trainer = Trainer(cfg, stage, resume=resume, log=lambda *_: None)
    try:
        return trainer.run()
    finally:
        trainer.close()


def fixed_eval_loss(model_dir_or_model, text_dir, seed=0) -> float:
    """Diffusion loss on a fixed batch with fixed noise (so before/after numbers compare)."""
    model = load_model(model_dir_or_model, device="cpu", dtype="float32").model if isinstance(model_dir_or_model, Path) else model_dir_or_model
    model.eval()
    store = TokenStore([str(text_dir)])
    rows = RowSource(store, 64, seed=123)
    batch = rows.batch(0, 16)
    ids = SpecialIds(mask=model.config.mask_token_id, pad=store.pad_id, eos=store.eos_id)
    nb = noise_batch(batch.tokens, MaskingSettings(), ids, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        loss, _ = diffusion_loss_sum(model, nb)
    return loss.item() / (16 * 64)


def test_pretrain_midtrain_sft_export_chain_lowers_loss_and_loads(assets, tmp_path):
    root, tok, text, sft = assets
    pre = tiny_config(tok, text, tmp_path / "pre", run={"steps": 40, "batch_size": 8},
                      data={"packing": "segments"}, objective={"prefix_probability": 0.05, "truncate_probability": 0.05,
                                                               "block_masking_probability": 0.05, "block_mode": "batch"})
    initial = fixed_eval_loss(build_model(pre.model, pre.run.seed).model, text)
    train(pre)
    after_pre = fixed_eval_loss(find_checkpoint(tmp_path / "pre"), text)
    assert after_pre < initial - 0.3, (initial, after_pre)
    mid = tiny_config(tok, text, tmp_path / "mid", model={"init": str(tmp_path / "pre")},
                      run={"steps": 10, "batch_size": 8},
                      objective={"sampling_eps": [0.001, 0.25], "prefix_probability": [0.01, 0.05],
                                 "truncate_probability": [0.01, 0.05], "block_masking_probability": [0.05, 0.1],
                                 "mask_block_sizes": [2, 4, 8], "block_mode": "row"})
    train(mid, "midtrain")
    sft_cfg = tiny_config(tok, sft, tmp_path / "sft", model={"init": str(tmp_path / "mid")},
                          data={"seq_len": 128},
                          optim={"name": "adamw", "schedule": "cosine", "warmup_ratio": 0.1, "lr": 1e-3},
                          run={"steps": 10, "batch_size": 4}, objective={"progress_src_mask_ratio": 0.05})
    train(sft_cfg, "sft")
    records = read_metrics(tmp_path / "sft")
    assert records[-1]["step"] == 10 and all(r["loss"] > 0 for r in records)
    from coda_train.export import export

    out = export(tmp_path / "sft", tmp_path / "hf", dtype="bfloat16")
    loaded = load_model(out, device="cpu", dtype="float32")
    assert loaded.config.extra["sampling_eps"] == 0.001
    prefix, suffix = loaded.tokenizer.encode("def f(x):\n    return "), loaded.tokenizer.encode("\n")
    try:
        from coda_model.engine import DecodeConfig, Engine
    except ImportError:  # engine not built yet: one denoising forward over prefix + masks + suffix
        ids = torch.tensor([prefix + [loaded.config.mask_token_id] * 4 + suffix])
        assert loaded.model(ids).logits.shape == (1, ids.shape[1], loaded.config.vocab_size)
    else:
        states = list(Engine(loaded).infill(prefix, suffix, length=4, config=DecodeConfig(steps=4)))
        assert states[-1].done and not states[-1].masked.any()
    png = plot_run(tmp_path / "pre")
    assert png.stat().st_size > 1000


def test_ar_objective_with_fim_rows_trains_and_exports_as_ar(assets, tmp_path):
    root, tok, text, _ = assets
    cfg = tiny_config(tok, text, tmp_path / "ar", objective={"kind": "ar", "fim_probability": 0.5},
                      run={"steps": 15, "batch_size": 4})
    summary = train(cfg)
    first = read_metrics(tmp_path / "ar")[0]["loss"]
    assert summary.final_loss < first
    from coda_train.export import export

    out = export(tmp_path / "ar", tmp_path / "ar-hf")
    assert load_model(out, device="cpu", dtype="float32").config.extra["training_objective"] == "ar"


def _run_cli(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "coda_train.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _overrides(cfg):
    return [f"{section}.{key}={_toml(value)}" for section, values in cfg.to_dict().items()
            for key, value in values.items() if value is not None]


def _toml(value):
    from coda_train.config import _toml_value

    return _toml_value(value)


def test_resume_after_kill_is_bit_exact(assets, tmp_path):
    root, tok, text, _ = assets
    # 200 short steps: the kill lands right after step 8, long before the run could finish by itself
    kw = dict(run={"steps": 200, "batch_size": 2, "save_every": 8, "keep_checkpoints": 2, "log_every": 10},
              optim={"name": "adafactor", "schedule": "linear", "warmup_steps": 3, "lr": 1e-2},
              objective={"prefix_probability": 0.2, "truncate_probability": 0.2, "block_masking_probability": 0.3})
    straight = tiny_config(tok, text, tmp_path / "straight", **kw)
    train(straight)
    killed = tiny_config(tok, text, tmp_path / "killed", **kw)
    proc = _run_cli(["pretrain", *[a for o in _overrides(killed) for a in ("--set", o)]], tmp_path)
    for line in proc.stdout:  # wait for the event "a mid-run checkpoint exists", then kill -9
        if "saved checkpoint" in line and "step-00000008" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list_checkpoints(tmp_path / "killed")[-1].name != "step-00000200"
    train(killed, resume=True)
    a = load_file(str(list_checkpoints(tmp_path / "straight")[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "killed")[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight")}
    lb = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "killed")}
    assert la == lb


def test_corrupt_checkpoint_is_reported_and_the_previous_one_used(assets, tmp_path):
    root, tok, text, _ = assets
    kw = dict(run={"steps": 12, "batch_size": 4, "save_every": 6, "keep_checkpoints": 2})
    ref = tiny_config(tok, text, tmp_path / "ref", **kw)
    train(ref)
    cfg = tiny_config(tok, text, tmp_path / "run", **kw)
    train(cfg)
    newest = list_checkpoints(tmp_path / "run")[-1]
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])  # a torn write
    messages = []
    assert find_checkpoint(tmp_path / "run", log=messages.append).name == "step-00000006"
    assert "corrupt or partial" in messages[0] and "step-00000012" in messages[0]
    train(cfg, resume=True)  # redoes steps 7..12 from step 6
    a = load_file(str(list_checkpoints(tmp_path / "ref")[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "run")[-1] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_needs_resume_and_a_matching_shape(assets, tmp_path):
    root, tok, text, _ = assets
    cfg = tiny_config(tok, text, tmp_path / "r", run={"steps": 2})
    train(cfg)
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(cfg, "pretrain")
    other = tiny_config(tok, text, tmp_path / "r", run={"steps": 4}, model={"hidden_size": 64, "head_dim": 16})
    with pytest.raises(CheckpointError, match="another model shape.*hidden_size"):
        Trainer(other, "pretrain", resume=True)


def test_bad_inputs_fail_before_compute_with_clear_errors(assets, tmp_path):
    root, tok, text, sft = assets
    with pytest.raises(DataError, match="coda-train data"):
        Trainer(tiny_config(tok, tmp_path / "nowhere", tmp_path / "a"), "pretrain")
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        Trainer(tiny_config(tok, text, tmp_path / "b", data={"seq_len": 512}), "pretrain")
    with pytest.raises(DataError, match="SFT shards"):
        Trainer(tiny_config(tok, text, tmp_path / "c"), "sft")
    with pytest.raises(ConfigError, match="model.tokenizer"):
        Trainer(tiny_config(tok, text, tmp_path / "d", model={"tokenizer": str(tmp_path)}), "pretrain")
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer(tiny_config(tok, text, tmp_path / "e", run={"batch_size": 6, "micro_batch_size": 4}), "pretrain")
    with pytest.raises(ConfigError, match="torch_xla"):
        Trainer(tiny_config(tok, text, tmp_path / "f", run={"device": "xla"}), "pretrain")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from coda_train.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text("[run]\nstepz = 3\n")
    assert main(["pretrain", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.stepz" in err


@pytest.mark.slow
def test_torch_compile_trains_like_eager_and_saves_loadable_checkpoints(assets, tmp_path):
    root, tok, text, _ = assets
    kw = dict(run={"steps": 2, "batch_size": 4, "save_every": 2})
    train(tiny_config(tok, text, tmp_path / "eager", **kw))
    train(tiny_config(tok, text, tmp_path / "compiled", model={"compile": True}, **kw))
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    assert compiled[0]["loss"] == pytest.approx(eager[0]["loss"], rel=1e-4)
    ckpt = list_checkpoints(tmp_path / "compiled")[-1]
    keys = load_file(ckpt / "model.safetensors").keys()
    assert not [k for k in keys if "_orig_mod" in k]              # saved under the real CoDA names
    assert load_model(ckpt, device="cpu", dtype="float32").config.vocab_size > 0
