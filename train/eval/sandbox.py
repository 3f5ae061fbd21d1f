"""Run untrusted generated programs: one subprocess each, limited, isolated, killed on timeout.

Why each layer exists (all are set up by `launcher.py` inside the child, see its docstring):
- its own session (`start_new_session`) so a timeout can `killpg` the program *and* its children;
- a temporary working directory, deleted afterwards;
- `RLIMIT_CPU`, `RLIMIT_AS` (memory), `RLIMIT_FSIZE`, `RLIMIT_NPROC` (fork bombs), no core files;
- no network: a fresh network namespace (`unshare`), plus an audit hook refusing sockets;
- when the evaluator runs as root (containers, CI), the program runs as a random unused uid, so
  it cannot delete or write files it does not own and `RLIMIT_NPROC` applies (root ignores it);
  afterwards every process of that uid is killed (catches anything that escaped the group).
The audit hook also refuses process creation and deletes/renames outside the working directory.

Usage: `run_program("assert 1 + 1 == 2", SandboxConfig())` -> ExecResult(status="passed", ...).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coda_train.eval import launcher

LAUNCHER_SOURCE = Path(launcher.__file__).read_text()
STATUSES = ("passed", "failed", "timeout", "error")
_UID_LOW, _UID_HIGH = 200_000, 2_000_000_000  # far above any real account


@dataclass
class SandboxConfig:
    """Limits for one program run. Defaults fit HumanEval/MBPP programs with room to spare."""

    timeout_s: float = 10.0          # wall clock; the process group is killed after it
    cpu_seconds: int = 10            # RLIMIT_CPU
    memory_bytes: int = 2 << 30      # RLIMIT_AS (address space); 2 GiB
    file_bytes: int = 16 << 20       # RLIMIT_FSIZE, also bounds captured stdout/stderr
    max_processes: int = 16          # RLIMIT_NPROC (per uid; only enforced for a non-root uid)
    network_namespace: bool = True   # unshare a fresh network namespace (falls back to the hook)
    drop_privileges: bool = True     # when root: run as a random unused uid
    audit_guard: bool = True         # PEP 578 hook: no sockets, no spawning, no deletes outside cwd
    python: str | None = None        # interpreter; None = this one if any user can run it, else python3
    output_chars: int = 2000         # tail of stderr kept in the result


@dataclass
class ExecResult:
    status: str                      # passed | failed | timeout | error (sandbox could not start)
    returncode: int | None
    detail: str = ""                 # last lines of stderr (why it failed)
    uid: int | None = None           # the uid it ran as (None: the caller's)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Isolation:
    python: str
    uid: int | None
    network_namespace: bool
    notes: list[str] = field(default_factory=list)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple, _Isolation] = {}


def _world_executable(path: str) -> bool:
    """True if every directory on the way to `path` and the file itself have the 'other x' bit."""
    real = Path(os.path.realpath(path))
    for part in [*reversed(real.parents), real]:
        try:
            if not part.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _candidates(cfg: SandboxConfig, dropping: bool) -> list[str]:
    if cfg.python:
        return [cfg.python]
    found = [sys.executable, getattr(sys, "_base_executable", sys.executable)]
    found += [p for p in (shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3") if p]
    out = []
    for p in found:
        if p and os.path.exists(p) and p not in out and (not dropping or _world_executable(p)):
            out.append(p)
    return out


def isolation(cfg: SandboxConfig) -> _Isolation:
    """Decide, once per config, the interpreter and which OS layers work here (probing them)."""
    key = (cfg.python, cfg.network_namespace, cfg.drop_privileges)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        dropping = cfg.drop_privileges and hasattr(os, "geteuid") and os.geteuid() == 0
        notes: list[str] = []
        chosen = None
        for uid in ([True, False] if dropping else [False]):
            for net in ([True, False] if cfg.network_namespace else [False]):
                for python in _candidates(cfg, uid):
                    iso = _Isolation(python, _random_uid() if uid else None, net)
                    probe = _run(iso, "import sys; sys.exit(0)", cfg, fixed_uid=False)
                    if probe.status == "passed":
                        chosen = iso
                        break
                    notes.append(f"{python} uid={uid} netns={net}: {probe.detail.strip()[-200:]}")
                if chosen:
                    break
            if chosen:
                break
        if chosen is None:
            raise RuntimeError("sandbox: no Python interpreter could be started in the sandbox: "
                               + "; ".join(notes) + " (pass --python /path/to/python3)")
        if dropping and chosen.uid is None:
            notes.append("could not drop privileges: programs run as root (RLIMIT_NPROC not enforced)")
        if cfg.network_namespace and not chosen.network_namespace:
            notes.append("no network namespace: sockets blocked by the audit hook only")
        chosen.notes = notes
        _probe_cache[key] = chosen
        return chosen


def describe(cfg: SandboxConfig) -> dict:
    """What isolation is actually in force (written into every run's summary)."""
    iso = isolation(cfg)
    return {"python": iso.python, "drops_to_uid": iso.uid is not None,
            "network_namespace": iso.network_namespace, "audit_guard": cfg.audit_guard,
            "limits": {"timeout_s": cfg.timeout_s, "cpu_seconds": cfg.cpu_seconds,
                       "memory_bytes": cfg.memory_bytes, "file_bytes": cfg.file_bytes,
                       "max_processes": cfg.max_processes}, "notes": iso.notes}


def _random_uid() -> int:
    return random.SystemRandom().randrange(_UID_LOW, _UID_HIGH)


def run_program(source: str, cfg: SandboxConfig | None = None) -> ExecResult:
    """Run `source` as a Python program in a fresh sandbox; exit status 0 means it passed."""
    cfg = cfg or SandboxConfig()
    return _run(isolation(cfg), source, cfg, fixed_uid=True)


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _run(iso: _Isolation, source: str, cfg: SandboxConfig, *, fixed_uid: bool) -> ExecResult:
    uid = (_random_uid() if fixed_uid else iso.uid) if iso.uid is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="coda-eval-"))
    try:
        (workdir / "program.py").write_text(source)
        settings = {"cpu_seconds": cfg.cpu_seconds, "memory_bytes": cfg.memory_bytes,
                    "file_bytes": cfg.file_bytes, "max_processes": cfg.max_processes,
                    "network_namespace": iso.network_namespace, "uid": uid,
                    "audit_guard": cfg.audit_guard}
        (workdir / "sandbox.json").write_text(json.dumps(settings))
        if uid is not None:
            for p in (workdir, workdir / "program.py", workdir / "sandbox.json"):
                os.chown(p, uid, uid)
        with open(workdir / ".stdout", "wb") as out, open(workdir / ".stderr", "wb") as err:
            proc = subprocess.Popen([iso.python, "-I", "-B", "-c", LAUNCHER_SOURCE], cwd=workdir,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
            timed_out = False
            try:
                proc.wait(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                proc.wait()
                if uid is not None:
                    subprocess.run([iso.python, "-I", "-c", LAUNCHER_SOURCE, "--reap", str(uid)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=30)
        detail = _tail(workdir / ".stderr", cfg.output_chars)
        if timed_out:
            return ExecResult("timeout", None, f"killed after {cfg.timeout_s:g}s wall clock", uid)
        rc = proc.returncode
        if rc == launcher.SANDBOX_ERROR and "sandbox: setup failed" in detail:
            return ExecResult("error", rc, detail, uid)
        if rc < 0 and not detail.strip():
            detail = f"killed by signal {signal.Signals(-rc).name}"
        return ExecResult("passed" if rc == 0 else "failed", rc, detail, uid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
