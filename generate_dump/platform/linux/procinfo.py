"""System and process facts from /proc, /sys and /etc, shared by the Linux backends."""

from __future__ import annotations

import os
from typing import Optional

from ...snapshot import Arch, CpuInfo, DsoDebug, LinuxFiles, OS, Process, SystemInfo
from . import procfs


def thread_name(pid: int, tid: int) -> Optional[str]:
    raw = procfs.read_file(f"/proc/{pid}/task/{tid}/comm")
    return raw.decode("utf-8", "replace").rstrip("\n") if raw else None


def system_info(arch: Arch) -> tuple[SystemInfo, bytes]:
    u = os.uname()
    nums = [int("".join(ch for ch in part if ch.isdigit()) or 0)
            for part in u.release.split("-")[0].split(".")[:3]]
    nums += [0] * (3 - len(nums))
    cpuinfo = procfs.read_file("/proc/cpuinfo") or b""
    info = procfs.parse_cpuinfo(cpuinfo)
    count = os.cpu_count() or int(info.get("_count", "1") or 1)
    cpu = CpuInfo(count=count)
    if arch == Arch.AMD64:
        family = int(info.get("cpu family", "0") or 0)
        model = int(info.get("model", "0") or 0)
        stepping = int(info.get("stepping", "0") or 0)
        flags = set(info.get("flags", "").split())
        base_family = min(family, 15)
        version = (stepping & 0xF) | (model & 0xF) << 4 | base_family << 8 \
            | ((model >> 4) & 0xF) << 16 | (max(0, family - 15) & 0xFF) << 20
        features = sum(1 << b for f, b in procfs.X86_FEATURE_BITS.items() if f in flags)
        amd = sum(1 << b for f, b in procfs.X86_AMD_FEATURE_BITS.items() if f in flags)
        mhz = int(float(info.get("cpu MHz", "0") or 0))
        max_khz = procfs.read_file("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        max_mhz = int(max_khz) // 1000 if max_khz and max_khz.strip().isdigit() else mhz
        cpu = CpuInfo(count=count, vendor=info.get("vendor_id", ""), family=family, model=model,
                      stepping=stepping, version_information=version,
                      feature_information=features, amd_extended_features=amd,
                      max_mhz=max_mhz, current_mhz=mhz)
    system = SystemInfo(
        arch=arch, os=OS.LINUX, os_major=nums[0], os_minor=nums[1], os_build=nums[2],
        os_version=f"{u.sysname} {u.release} {u.version} {u.machine}", cpu=cpu,
    )
    return system, cpuinfo


def os_release(pid: int) -> Optional[bytes]:
    for base in (f"/proc/{pid}/root", ""):
        for name in ("/etc/lsb-release", "/etc/os-release", "/usr/lib/os-release"):
            data = procfs.read_file(base + name)
            if data:
                return data
    return None


def auxv_entries(auxv: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for off in range(0, len(auxv) - 15, 16):
        key = int.from_bytes(auxv[off : off + 8], "little")
        val = int.from_bytes(auxv[off + 8 : off + 16], "little")
        if key == 0:
            break
        out.setdefault(key, val)
    return out


def process_of(pid: int, stat: procfs.ProcStat) -> Process:
    ticks = os.sysconf("SC_CLK_TCK")
    cmdline = procfs.read_file(f"/proc/{pid}/cmdline") or b""
    return Process(
        pid=pid,
        create_time=procfs.boot_time() + stat.start_time // ticks,
        user_time=stat.utime / ticks,
        kernel_time=stat.stime / ticks,
        command_line=tuple(a.decode("utf-8", "surrogateescape")
                           for a in cmdline.split(b"\0")[:-1]),
        parent_pid=stat.ppid,
    )


def linux_files(pid: int, *, cpuinfo: bytes, auxv: Optional[bytes], maps: bytes,
                include_environment: bool, dso: Optional[DsoDebug]) -> LinuxFiles:
    """The raw Linux streams; the environment only when asked for (it holds secrets)."""
    return LinuxFiles(
        cpuinfo=cpuinfo,
        status=procfs.read_file(f"/proc/{pid}/status"),
        lsb_release=os_release(pid),
        cmdline=procfs.read_file(f"/proc/{pid}/cmdline") or b"",
        environ=procfs.read_file(f"/proc/{pid}/environ") if include_environment else None,
        auxv=auxv,
        maps=maps,
        dso_debug=dso,
    )
