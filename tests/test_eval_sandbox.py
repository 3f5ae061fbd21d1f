"""Sandbox properties: programs run isolated; hostile programs cannot harm the host or the run."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from coda_train.eval.sandbox import SandboxConfig, _UID_LOW, describe, run_program

FAST = SandboxConfig(timeout_s=3, cpu_seconds=3, memory_bytes=512 << 20)
LAYERS = {"all-layers": FAST, "os-layers-only": SandboxConfig(**{**FAST.__dict__, "audit_guard": False})}


def _needs_uid_drop(cfg: SandboxConfig) -> None:
    if not describe(cfg)["drops_to_uid"]:
        pytest.skip("without root the OS layers cannot protect files of the same user; the audit hook does")


def _sandbox_processes(uid: int | None) -> list[int]:
    """Live processes owned by the run's sandbox uid (none may remain after a run returns); any
    sandbox uid when the run kept the caller's. Only that uid: runs of other test sessions on this
    machine own other random uids. Zombies are dead already; they wait for whichever ancestor reaps
    orphans in this container."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = dict(l.split(":", 1) for l in (entry / "status").read_text().splitlines() if ":" in l)
            except OSError:
                continue
            owner = int(status["Uid"].split()[1])
            if (owner == uid if uid is not None else owner >= _UID_LOW) and not status["State"].strip().startswith(("Z", "X")):
                found.append(int(entry.name))
    return found


def test_passing_and_failing_programs_are_told_apart():
    assert run_program("assert sum([1, 2]) == 3\n", FAST).status == "passed"
    bad = run_program("assert sum([1, 2]) == 4\n", FAST)
    assert bad.status == "failed" and "AssertionError" in bad.detail


def test_program_runs_in_a_fresh_temporary_directory():
    src = "import os\nassert sorted(os.listdir('.')) == ['.stderr', '.stdout', 'program.py', 'sandbox.json'], os.listdir('.')\n"
    assert run_program(src, FAST).status == "passed"
    # and may write there
    assert run_program("open('x.txt', 'w').write('ok')\nassert open('x.txt').read() == 'ok'\n", FAST).status == "passed"


@pytest.mark.parametrize("layers", list(LAYERS))
def test_rm_rf_of_a_directory_outside_cwd_leaves_it_intact(tmp_path, layers):
    cfg = LAYERS[layers]
    if not cfg.audit_guard:
        _needs_uid_drop(cfg)
    decoy = tmp_path / "decoy"
    (decoy / "sub").mkdir(parents=True)
    (decoy / "sub" / "precious.txt").write_text("keep me")
    src = (f"import os, shutil\npath = {str(decoy)!r}\n"
           "try:\n    shutil.rmtree(path)\nexcept Exception as e:\n    print(e)\n"
           "try:\n    os.system('rm -rf ' + path)\nexcept Exception as e:\n    print(e)\n"
           "try:\n    os.remove(os.path.join(path, 'sub', 'precious.txt'))\nexcept Exception as e:\n    print(e)\n")
    run_program(src, cfg)
    assert (decoy / "sub" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("layers", list(LAYERS))
def test_fork_bomb_is_contained_and_leaves_no_process_behind(layers):
    cfg = SandboxConfig(**{**LAYERS[layers].__dict__, "timeout_s": 2})
    if not cfg.audit_guard:
        _needs_uid_drop(cfg)
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_program(src, cfg)
    assert result.status in ("failed", "timeout")
    assert _sandbox_processes(result.uid) == []
    assert run_program("print('still fine')\n", FAST).status == "passed"


def test_processes_that_leave_the_group_are_killed_too():
    _needs_uid_drop(LAYERS["os-layers-only"])
    src = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        time.sleep(1)\n"
           "raise SystemExit(0)\n")
    result = run_program(src, LAYERS["os-layers-only"])
    assert result.status == "passed" and result.uid is not None
    assert _sandbox_processes(result.uid) == []


def test_infinite_loop_times_out_and_is_killed():
    result = run_program("while True:\n    pass\n", SandboxConfig(**{**FAST.__dict__, "timeout_s": 1}))
    assert result.status == "timeout"
    assert _sandbox_processes(result.uid) == []


def test_huge_allocation_fails_inside_the_program():
    result = run_program("x = []\nwhile True:\n    x.append(bytearray(64 << 20))\n", FAST)
    assert result.status == "failed" and "MemoryError" in result.detail


@pytest.mark.parametrize("layers", list(LAYERS))
def test_socket_connect_to_a_listening_host_port_gets_nowhere(layers):
    cfg = LAYERS[layers]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        src = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
        result = run_program(src, cfg)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.status == "failed"


def test_output_flood_is_bounded_by_the_file_size_limit():
    cfg = SandboxConfig(**{**FAST.__dict__, "file_bytes": 1 << 20})
    result = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", cfg)
    assert result.status == "failed"


def test_describe_reports_the_isolation_in_force():
    info = describe(FAST)
    assert os.path.exists(info["python"]) and info["audit_guard"] is True
    assert info["limits"]["memory_bytes"] == 512 << 20
