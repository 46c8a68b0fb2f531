"""Builds the native `generate_dump` launcher (launcher/generate_dump.c) when a C compiler
is at hand; without one, `generate_dump` is the Python console script. Either way the
Python program is also installed as `generate_dump-python`.

Why a native launcher: `generate_dump run -- CMD` wraps whole CI jobs, and the 10-15 ms a
Python interpreter needs to start would delay every CMD; the launcher starts CMD first
(README, "What it costs"). Set GENERATE_DUMP_NO_LAUNCHER=1 to install without it.
"""

import os
import shlex
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join("launcher", "generate_dump.c")
PYTHON_ENTRY = "generate_dump._entry:main"


def build_launcher():
    """The launcher's path under build/, or None (not Linux, no compiler, or opted out)."""
    if not sys.platform.startswith("linux") or os.environ.get("GENERATE_DUMP_NO_LAUNCHER"):
        return None
    out_dir = os.path.join("build", "launcher")
    out = os.path.join(out_dir, "generate_dump")
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    try:
        os.makedirs(os.path.join(HERE, out_dir), exist_ok=True)
        subprocess.run([*cc, "-O2", "-Wall", "-o", out, SOURCE], cwd=HERE, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stdout", b"") or str(exc).encode()
        sys.stderr.write("note: no native generate_dump launcher (the Python one is "
                         "installed; `run` starts commands ~15 ms later): "
                         + detail.decode(errors="replace").strip()[-300:] + "\n")
        return None
    return out


_build_scripts = Distribution().get_command_class("build_scripts")


class BuildBinaryScripts(_build_scripts):
    """build_scripts reads scripts as Python text; the launcher is copied as it is."""

    def run(self):
        self.mkpath(self.build_dir)
        for script in self.scripts:
            target = os.path.join(self.build_dir, os.path.basename(script))
            self.copy_file(script, target)
            os.chmod(target, 0o755)


class BinaryDistribution(Distribution):
    """A wheel with the launcher holds machine code: tag it for this platform."""

    def has_ext_modules(self):
        return self.scripts is not None and len(self.scripts) > 0


launcher = build_launcher()
console = [f"generate_dump-python = {PYTHON_ENTRY}"]
if launcher is None:
    console.append(f"generate_dump = {PYTHON_ENTRY}")
setup(
    scripts=[launcher] if launcher else [],
    entry_points={"console_scripts": console,
                  "pytest11": ["generate_dump = generate_dump.pytest_plugin"]},
    distclass=BinaryDistribution,
    cmdclass={"build_scripts": BuildBinaryScripts},
)
