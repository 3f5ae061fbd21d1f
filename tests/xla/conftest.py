"""XLA's CPU devices for tests/xla (run in .venv-xla by scripts/test_xla.sh).

PJRT reads these when torch_xla first starts its runtime, so they are set before any test imports it;
the training runs these tests start as subprocesses inherit them. torch_xla 2.9's PJRT CPU client takes
its device count from CPU_NUM_DEVICES (XLA_FLAGS=--xla_force_host_platform_device_count is not read).
"""

from __future__ import annotations

import os

NUM_DEVICES = 4

os.environ["PJRT_DEVICE"] = "CPU"
os.environ["CPU_NUM_DEVICES"] = str(NUM_DEVICES)
os.environ.setdefault("OMP_NUM_THREADS", "1")
