"""The training loop shared by pretrain, midtrain and SFT on every back-end.

Reads top to bottom: build (model, data, optimizer, checks) -> resume -> for each step: one global batch,
its noise (drawn on the CPU from a generator seeded by (seed, step), so it is the same on 1 or N ranks
and after a resume), micro-batches per rank, backward of sum-loss / global normaliser, clip, step,
log, checkpoint.

    coda-train pretrain --config configs/tiny_pretrain.toml --set run.steps=50
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from coda_train.backends import make_backend
from coda_train.build import build_model
from coda_train.checkpointing import (CheckpointError, TrainState, check_same_shape, find_checkpoint,
                                      list_checkpoints, load_model_state, load_training_state,
                                      read_trainer_state, write_checkpoint)
from coda_train.config import ConfigError, TrainConfig, at_epoch
from coda_train.data import DataError, TokenStore
from coda_train.loader import RowSource
from coda_train.masking import MaskingSettings, SpecialIds, fim_rows, noise_batch, progressive_src_mask
from coda_train.metrics import MetricsLogger, flops_per_token, guess_peak_flops, measure_matmul_flops
from coda_train.objective import ar_loss_sum, diffusion_loss_sum
from coda_train.optim import build_optimizer, build_scheduler

STAGES = ("pretrain", "midtrain", "sft")


@dataclass
class RunSummary:
    steps: int
    final_loss: float
    tokens_per_s: float
    mfu: Optional[float]
    out_dir: str


def masking_settings(cfg: TrainConfig, epoch: int) -> MaskingSettings:
    o = cfg.objective
    return MaskingSettings(
        sampling_eps=at_epoch(o.sampling_eps, epoch), prefix_probability=at_epoch(o.prefix_probability, epoch),
        truncate_probability=at_epoch(o.truncate_probability, epoch),
        block_masking_probability=at_epoch(o.block_masking_probability, epoch),
        mask_block_sizes=list(o.mask_block_sizes), block_mode=o.block_mode,
        infill_pad_probability=o.infill_pad_probability, max_infill_len=o.max_infill_len,
        fim_probability=o.fim_probability)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The noise of step `step` depends on nothing else (world size, resume point)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


class Trainer:
    def __init__(self, cfg: TrainConfig, stage: str = "pretrain", *, resume: bool = False, log=print) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}: use {', '.join(STAGES)}")
        self.cfg, self.stage, self.log = cfg, stage, log
        self.out = Path(cfg.run.out_dir)
        self.backend = make_backend(cfg.run)
        self._setup(resume)

    # --- setup: everything that can fail does so here, before compute ----------------------------------
    def _setup(self, resume: bool) -> None:
        cfg, b = self.cfg, self.backend
        ckpt = None
        if list_checkpoints(self.out):
            if not resume:
                raise CheckpointError(f"{self.out} already holds checkpoints: pass --resume to continue that run "
                                      "or set run.out_dir to a new directory")
            ckpt = find_checkpoint(self.out, log=self.log)
            if ckpt is None:
                raise CheckpointError(f"no intact checkpoint in {self.out}: every candidate is corrupt; "
                                      "start a new run.out_dir")
            if self.backend.is_main:
                for bad in [p for p in list_checkpoints(self.out) if p.name > ckpt.name]:
                    bad.rename(bad.with_name(f"corrupt-{bad.name}"))  # kept for inspection, out of the way
            self.backend.barrier()
        built = build_model(cfg.model, cfg.run.seed)
        self.model_config, self.tokenizer = built.config, built.tokenizer
        mc = built.config
        if cfg.data.seq_len > mc.max_position_embeddings:
            raise ConfigError(f"data.seq_len={cfg.data.seq_len} is above the model's max_position_embeddings="
                              f"{mc.max_position_embeddings}: lower data.seq_len")
        store = TokenStore(cfg.data.train, expect_vocab=mc.vocab_size)
        if (store.kind == "sft") != (self.stage == "sft"):
            need = "SFT shards (coda-train data --kind sft)" if self.stage == "sft" else "text shards"
            raise DataError(f"stage {self.stage} needs {need}, but data.train holds {store.kind} shards")
        self.rows = RowSource(store, cfg.data.seq_len, seed=cfg.run.seed, shuffle=cfg.data.shuffle,
                              sft_policy=cfg.data.sft_max_len_policy, pad_id=self.tokenizer.pad_id,
                              epoch_rows=cfg.data.epoch_rows)
        fim = self.tokenizer.fim_ids
        self.ids = SpecialIds(mask=mc.mask_token_id, pad=self.tokenizer.pad_id, eos=self.tokenizer.eos_id,
                              fim_prefix=fim.get("<|fim_prefix|>"), fim_middle=fim.get("<|fim_middle|>"),
                              fim_suffix=fim.get("<|fim_suffix|>"))
        if cfg.objective.fim_probability > 0 and None in (self.ids.fim_prefix, self.ids.fim_middle, self.ids.fim_suffix):
            raise ConfigError("objective.fim_probability > 0 but the tokenizer has no FIM tokens")
        # batch geometry
        world = b.world
        micro = cfg.run.micro_batch_size or max(1, cfg.run.batch_size // world)
        if cfg.run.batch_size % (micro * world):
            raise ConfigError(f"run.batch_size={cfg.run.batch_size} is not a multiple of micro_batch_size={micro} x "
                              f"world size {world}")
        self.micro, self.accum = micro, cfg.run.batch_size // (micro * world)
        if b.static_shapes and cfg.objective.kind == "diffusion" and cfg.objective.logits != "full":
            raise ConfigError(f"objective.logits = {cfg.objective.logits!r} computes a number of logits per row that "
                              f"depends on the noise: under run.backend = {b.name} every step would recompile; "
                              "set objective.logits = \"full\"")
        # model, optimizer, schedule
        self.state = TrainState()
        self._saved_step = -1
        model_state = optim_state = rng_state = None
        if ckpt is not None:
            check_same_shape(ckpt, mc)
            self.state, _ = read_trainer_state(ckpt)
            self._saved_step = self.state.step
            model_state = load_model_state(ckpt)
            optim_state, rng_state = load_training_state(ckpt)
        self.raw_model = built.model
        if model_state is not None:
            self.raw_model.load_state_dict({k: v.to(next(self.raw_model.parameters()).dtype) for k, v in model_state.items()})
        self.model = b.wrap(self.raw_model)
        if cfg.model.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.run.steps)
        if optim_state is not None:
            b.load_optim_state_dict(self.raw_model, self.optimizer, optim_state["optimizer"])
            self.scheduler.load_state_dict(optim_state["scheduler"])
            torch.set_rng_state(rng_state["torch"])
            if "cuda" in rng_state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(list(rng_state["cuda"]))
            self.log(f"resumed from {ckpt} at step {self.state.step}")
        if self.state.step >= cfg.run.steps:
            self.log(f"run already at step {self.state.step} >= run.steps={cfg.run.steps}: nothing to do")
        self.flops_per_token = flops_per_token(mc, cfg.data.seq_len)
        self.peak_flops = cfg.run.peak_tflops * 1e12 if cfg.run.peak_tflops > 0 else guess_peak_flops(b.device, cfg)

    # --- one optimizer step -----------------------------------------------------------------------------
    def train_step(self, step: int) -> dict:
        cfg, b = self.cfg, self.backend
        B, L = cfg.run.batch_size, cfg.data.seq_len
        batch = self.rows.batch(self.state.rows_consumed, B)
        settings = masking_settings(cfg, batch.epoch)
        gen = step_generator(cfg.run.seed, step)
        diffusion = cfg.objective.kind == "diffusion"
        src = batch.src_mask
        if src is not None and cfg.objective.progress_src_mask_ratio > 0:
            src = progressive_src_mask(src, step, cfg.run.steps, cfg.objective.progress_src_mask_ratio)
        if diffusion:
            nb = noise_batch(batch.tokens, settings, self.ids, gen, src_mask=src)
            normaliser = B * L
        else:
            fim = torch.rand((B,), generator=gen) < cfg.objective.fim_probability if cfg.objective.fim_probability > 0 else None
            ar_tokens = batch.tokens if fim is None else fim_rows(batch.tokens, fim, self.ids, gen)
            normaliser = B * (L - 1)
        seg = batch.segment_ids if cfg.data.packing == "segments" else None
        moved = nb.rewritten if diffusion else fim
        if seg is not None and moved is not None and bool(moved.any()):
            seg = seg.clone()
            seg[moved] = 0  # a FIM / infill row was rearranged: attend across the whole row
        total = torch.zeros((), dtype=torch.float64, device=b.device)
        num_targets = 0
        for a in range(self.accum):
            lo = (a * b.world + b.rank) * self.micro
            sl = slice(lo, lo + self.micro)
            dev = lambda t: None if t is None else b.to_device(t[sl])  # noqa: E731
            with self._autocast():
                if diffusion:
                    part = type(nb)(**{k: dev(v) for k, v in nb.__dict__.items()})
                    loss_sum, n = diffusion_loss_sum(self.model, part, segment_ids=dev(seg), logits=cfg.objective.logits)
                else:
                    loss_sum, n = ar_loss_sum(self.model, dev(ar_tokens), segment_ids=dev(seg), src_mask=dev(src))
            (loss_sum * (b.grad_scale() / normaliser)).backward()
            total += loss_sum.detach().double()
            num_targets += n
        grad_norm = b.clip_grad_norm(self.model, cfg.optim.grad_clip)
        b.optimizer_step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        b.mark_step()  # device values are read only after this: one graph per step under XLA
        loss = float(b.all_reduce_sum(total)) / normaliser
        self.state.rows_consumed += B
        self.state.tokens_seen += B * L
        self.state.step = step + 1
        return {"loss": loss, "grad_norm": float(grad_norm), "epoch": batch.epoch, "targets": int(num_targets),
                "backend": b.step_metrics()}

    def _autocast(self):
        if self.cfg.run.precision == "bf16" and self.backend.device.type in ("cuda", "cpu"):
            return torch.autocast(self.backend.device.type, dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # --- the loop -----------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        cfg, b = self.cfg, self.backend
        if b.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.toml").write_text(self.cfg.to_toml())
        metrics = MetricsLogger(self.out, enabled=b.is_main, tensorboard=cfg.run.tensorboard, wandb=cfg.run.wandb,
                                config=cfg.to_dict())
        bar = self._bar()
        threads = torch.get_num_threads()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)  # restored below: the caller's process keeps its setting
        tokens_per_step = cfg.run.batch_size * cfg.data.seq_len
        loss, timed_tokens, timed_s = float("nan"), 0, 0.0
        window: list[float] = []  # losses since the last log line (the diffusion loss is noisy per step)
        try:
            while self.state.step < cfg.run.steps:
                step = self.state.step
                t0 = time.perf_counter()
                out = self.train_step(step)
                if b.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                self.state.elapsed_s += dt
                if step > 0 or cfg.run.steps == 1:  # step 0 pays for warm-up / compilation
                    timed_tokens, timed_s = timed_tokens + tokens_per_step, timed_s + dt
                loss = out["loss"]
                window.append(loss)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {step + 1}: lower optim.lr or check the data")
                tps = tokens_per_step / dt
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}", epoch=out["epoch"])
                if (step + 1) % cfg.run.log_every == 0 or step == 0 or step + 1 == cfg.run.steps:
                    metrics.log({"step": step + 1, "loss": loss, "loss_avg": sum(window) / len(window),
                                 "lr": self.scheduler.get_last_lr()[0],
                                 "grad_norm": out["grad_norm"], "epoch": out["epoch"], "tokens": self.state.tokens_seen,
                                 "tokens_per_s": tps, "mfu": self._mfu(tps), "elapsed_s": self.state.elapsed_s,
                                 **out["backend"]})
                    window = []
                if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < cfg.run.steps:
                    self.save()
            if self._saved_step != self.state.step:
                self.save()
            peak_note = ""
            if self.peak_flops is None and b.device.type == "cpu" and b.is_main:
                dtype = torch.bfloat16 if "bf" in cfg.model.dtype + cfg.run.precision else torch.float32
                self.peak_flops = measure_matmul_flops(b.device, dtype)  # no vendor peak for CPUs; same threads
                peak_note = f" of a measured {self.peak_flops / 1e9:,.0f} GFLOP/s matmul"
        finally:
            torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
            metrics.close()
        tps = timed_tokens / timed_s if timed_s else 0.0
        summary = RunSummary(steps=self.state.step, final_loss=loss, tokens_per_s=tps, mfu=self._mfu(tps),
                             out_dir=str(self.out))
        if b.is_main:
            mfu = f"{summary.mfu * 100:.2f}%{peak_note}" if summary.mfu is not None else "n/a (set run.peak_tflops)"
            self.log(f"done: {summary.steps} steps, final loss {loss:.4f}, {tps:,.0f} tokens/s, MFU {mfu}, "
                     f"checkpoint in {self.out / 'checkpoints'}")
            (self.out / "summary.json").write_text(json.dumps(summary.__dict__, indent=1) + "\n")
        b.barrier()
        return summary

    def _mfu(self, tokens_per_s: float) -> Optional[float]:
        if not self.peak_flops:
            return None
        return tokens_per_s * self.flops_per_token / (self.peak_flops * self.backend.num_devices)

    def _bar(self):
        if not (self.backend.is_main and self.cfg.run.progress):
            return None
        from tqdm import tqdm  # noqa: PLC0415

        return tqdm(total=self.cfg.run.steps, initial=self.state.step, desc=self.stage, unit="step",
                    dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def save(self) -> Path:
        b = self.backend
        model_state = b.model_state_dict(self.raw_model)
        optim_state = {"optimizer": b.optim_state_dict(self.raw_model, self.optimizer),
                       "scheduler": self.scheduler.state_dict()}
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        path = None
        self._saved_step = self.state.step
        if b.is_main:
            path = write_checkpoint(self.out, self.state, model_state=model_state, model_config=self.model_config,
                                    tokenizer=self.tokenizer, optim_state=optim_state, rng_state=rng,
                                    train_config=self.cfg.to_dict(), keep=self.cfg.run.keep_checkpoints)
            self.log(f"saved checkpoint {path}")
        b.barrier()
        return path

    def close(self) -> None:
        self.backend.close()
