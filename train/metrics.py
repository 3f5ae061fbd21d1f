"""What a run reports: JSONL metrics (always), TensorBoard / W&B (when installed), FLOPs and MFU, plots.

`RUN/metrics.jsonl` has one JSON object per logged step (step, loss, loss_avg (mean since the previous
record), lr, grad_norm, epoch, tokens, tokens_per_s, mfu, elapsed_s); `coda-train plot RUN` turns it into `RUN/curves.png`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from coda_model.config import CodaConfig

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
              "V100": 125e12, "4090": 165e12, "3090": 71e12, "TPU v4": 275e12, "TPU v5p": 459e12, "TPU v5e": 197e12}


def flops_per_token(cfg: CodaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (lm_head included, embedding lookup not) plus
    attention's 12 x layers x (heads x head_dim) x seq_len (PaLM appendix B, full bidirectional attention)."""
    matmul_params = cfg.num_parameters - cfg.vocab_size * cfg.hidden_size
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6.0 * matmul_params + attn


def guess_peak_flops(device: torch.device, cfg=None) -> Optional[float]:
    """bf16 peak of a known GPU/TPU; None on CPUs (give run.peak_tflops, e.g. from `coda-bench train`)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in PEAK_FLOPS.items():
            if key in name:
                return flops if cfg is None or cfg.run.precision == "bf16" or cfg.model.dtype == "bfloat16" else flops / 2
    if device.type == "xla":
        try:
            import torch_xla.core.xla_model as xm  # noqa: PLC0415

            kind = str(xm.xla_device_hw(device))
            for key, flops in PEAK_FLOPS.items():
                if key.startswith("TPU") and key.split()[1] in kind.lower():
                    return flops
        except Exception:  # noqa: BLE001 - best effort
            return None
    return None


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 1024, reps: int = 4) -> float:
    """Achieved FLOP/s of an n^3 matmul: the stand-in peak for MFU on CPUs (no vendor figure applies)."""
    import time  # noqa: PLC0415

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


class MetricsLogger:
    """Append-only JSONL plus optional TensorBoard / W&B sinks. Only the main rank writes."""

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, wandb: bool = False,
                 config: Optional[dict] = None) -> None:
        self.enabled = enabled
        self.tb = self.wb = None
        self.file = None
        if not enabled:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.file = (out / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - needs the tensorboard package

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                self.tb = None
        if wandb:
            try:
                import wandb as wb  # noqa: PLC0415

                self.wb = wb.init(project="coda-train", dir=str(out), config=config, resume="allow")
            except ImportError:
                self.wb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        step = record.get("step", 0)
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log({k: v for k, v in record.items() if v is not None}, step=step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a coda-train run directory?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # a resumed run appends: keep the last record per step
    by_step = {r["step"]: r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def plot_run(run_dir: str | Path, out: Optional[str | Path] = None) -> Path:
    """Loss and learning-rate curves as a PNG (matplotlib, no display needed)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}/metrics.jsonl has no records yet")
    steps = [r["step"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(steps, [r["loss"] for r in records], marker=".", alpha=0.35, label="step loss")
    if all("loss_avg" in r for r in records):
        ax1.plot(steps, [r["loss_avg"] for r in records], label="mean since last log")
    ax1.legend()
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_title(f"loss — {Path(run_dir).name}")
    ax1.grid(alpha=0.3)
    ax2.plot(steps, [r["lr"] for r in records], color="tab:orange")
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate")
    ax2.set_title("learning rate")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
