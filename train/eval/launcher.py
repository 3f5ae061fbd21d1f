"""Sandbox launcher: the first code that runs inside every sandboxed program's process.

Not imported by the evaluator: `sandbox.py` passes this file's *source* to a bare interpreter
(`python -I -c SOURCE`) so it works with any Python 3.8+ (often `/usr/bin/python3`, because the
sandbox user may not be able to read the venv's interpreter). It reads `sandbox.json` from its
working directory and, in this order:

1. detaches from the network: `unshare(CLONE_NEWNET)` (as root), or `unshare(CLONE_NEWUSER |
   CLONE_NEWNET)` (unprivileged); the new namespace has only a downed loopback device;
2. sets resource limits: CPU seconds, address space, file size, process count, no core files;
3. drops to a throw-away uid/gid (when started as root), so the program can neither touch files
   it does not own nor escape `RLIMIT_NPROC` (root is exempt from it);
4. installs an audit hook that refuses sockets, process creation and deleting/renaming anything
   outside the working directory (a second layer; bypassable by ctypes, which is why 1-3 exist);
5. runs `program.py` as `__main__`.

Exit code 97 with a "sandbox:" line on stderr means the sandbox itself could not be set up.
With `--reap UID` it instead kills every process owned by UID (run as root: drop to UID, then
`kill(-1, SIGKILL)`), which catches programs that left their process group.
"""

import json
import os
import sys

SANDBOX_ERROR = 97
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def _unshare(flags):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")


def _detach_network():
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNET)
    else:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)


def _set_limits(cfg):
    import resource

    cpu = int(cfg["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if cfg.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (cfg["memory_bytes"], cfg["memory_bytes"]))
    if cfg.get("file_bytes"):
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["file_bytes"], cfg["file_bytes"]))
    if cfg.get("max_processes"):
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["max_processes"], cfg["max_processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _install_guard(root):
    """Refuse, via PEP 578 audit events, the operations no benchmark program needs."""
    root = os.path.realpath(root)
    spawn = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
             "subprocess.Popen", "os.kill", "os.killpg", "os.setsid", "os.setpgid"}
    paths = {"os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.truncate", "os.chmod", "os.chown"}

    def inside(path):
        if isinstance(path, int):  # a file descriptor: opened already, inside or allowed
            return True
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.path.join(root, str(path)))
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event.startswith("socket.") or event in spawn:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event in paths:
            targets = args[:2] if event == "os.rename" else args[:1]
            if not all(inside(p) for p in targets):
                raise PermissionError("sandbox: %s outside the working directory" % event)

    sys.addaudithook(hook)


def _reap(uid):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, 9)  # as a non-root uid, -1 means "every process of mine" (not myself)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--reap":
        _reap(int(sys.argv[2]))
        return
    try:
        with open("sandbox.json") as f:
            cfg = json.load(f)
        if cfg.get("network_namespace"):
            _detach_network()
        _set_limits(cfg)
        if cfg.get("uid") is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        with open("program.py") as f:
            source = f.read()
        if cfg.get("audit_guard"):
            _install_guard(os.getcwd())
    except Exception as exc:  # the sandbox, not the program, failed
        sys.stderr.write("sandbox: setup failed: %r\n" % (exc,))
        sys.exit(SANDBOX_ERROR)
    sys.argv = ["program.py"]
    code = compile(source, "program.py", "exec")
    exec(code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
