"""Say why ptrace was refused: every cause shows up as the same EPERM."""

from __future__ import annotations

import os
import pwd

from .procfs import parse_status, read_file

CAP_SYS_PTRACE = 19


def _caps() -> int:
    status = parse_status(read_file("/proc/self/status") or b"")
    try:
        return int(status.get("CapEff", "0"), 16)
    except ValueError:
        return 0


def has_cap_sys_ptrace() -> bool:
    return bool(_caps() >> CAP_SYS_PTRACE & 1)


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _yama_scope() -> int | None:
    raw = read_file("/proc/sys/kernel/yama/ptrace_scope")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _is_descendant(pid: int) -> bool:
    me = os.getpid()
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        raw = read_file(f"/proc/{pid}/stat")
        if raw is None:
            return False
        try:
            pid = int(raw[raw.rindex(b")") + 2 :].split()[1])
        except (ValueError, IndexError):
            return False
        if pid == me:
            return True
    return False


def tracer_of(pid: int) -> int:
    status = parse_status(read_file(f"/proc/{pid}/status") or b"")
    try:
        return int(status.get("TracerPid", "0"))
    except ValueError:
        return 0


def tracer_message(pid: int, tracer: int) -> str:
    comm = (read_file(f"/proc/{tracer}/comm") or b"?").decode("utf-8", "replace").strip()
    return (f"process {pid} is already traced by process {tracer} ({comm}); "
            f"detach that debugger first, or run this command from inside it")


def explain_eperm(pid: int) -> str:
    """One sentence naming the cause that applies, and what to do about it."""
    tracer = tracer_of(pid)
    if tracer:
        return tracer_message(pid, tracer)
    status = parse_status(read_file(f"/proc/{pid}/status") or b"")
    cap = has_cap_sys_ptrace()
    euid = os.geteuid()
    try:
        target_uids = {int(u) for u in status.get("Uid", "").split()}
    except ValueError:
        target_uids = set()
    if not cap:
        if euid == 0:
            return (f"not permitted to trace process {pid}: running as root but without "
                    "CAP_SYS_PTRACE (in a container, start it with --cap-add=SYS_PTRACE)")
        if target_uids and target_uids != {euid}:
            owner = _user(min(target_uids - {euid}) if target_uids - {euid} else euid)
            return (f"not permitted to trace process {pid}: it runs as {owner}; "
                    f"run generate_dump as that user or as root")
        # A non-dumpable process keeps its /proc/PID directory but the files inside it
        # (stat, status, mem, ...) become root's.
        try:
            proc_owner = os.stat(f"/proc/{pid}/stat").st_uid
        except OSError:
            proc_owner = euid
        if proc_owner != euid:
            return (f"not permitted to trace process {pid}: it is not dumpable "
                    "(it called prctl(PR_SET_DUMPABLE, 0) or changed credentials); "
                    "only root with CAP_SYS_PTRACE can dump it")
        scope = _yama_scope()
        if scope == 1 and not _is_descendant(pid):
            return (f"not permitted to trace process {pid}: Yama ptrace_scope is 1, which lets "
                    "a process trace only its own descendants; run generate_dump as root "
                    "(CAP_SYS_PTRACE), or start the program under `generate_dump run`, or have "
                    "it allow tracing with prctl(PR_SET_PTRACER)")
        if scope == 2:
            return (f"not permitted to trace process {pid}: Yama ptrace_scope is 2 "
                    "(admin-only attach); run generate_dump as root with CAP_SYS_PTRACE")
    scope = _yama_scope()
    if scope == 3:
        return (f"not permitted to trace process {pid}: Yama ptrace_scope is 3, which disables "
                "attaching on this system until reboot")
    return (f"not permitted to trace process {pid}: ptrace was refused although permissions "
            "look sufficient (a seccomp filter or a security module such as SELinux or "
            "AppArmor may block it)")
