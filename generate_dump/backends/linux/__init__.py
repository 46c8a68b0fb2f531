"""Linux backend: ptrace (python-ptrace) plus /proc.

``capture``, ``capture_session`` and ``CaptureOptions`` (from .capture) are loaded on
first use: `generate_dump run` imports light modules of this package (supervisor,
coredumps) and must start its command without loading the capture machinery.
As before, the package's ``capture`` attribute is the function, not the submodule.
"""

import sys
import types

TYPE_CHECKING = False  # not typing's: importing typing costs `run`'s start ~2 ms

if TYPE_CHECKING:  # what __getattr__ below provides, for the type checker
    from .capture import CaptureOptions, capture, capture_session  # noqa: F401

__all__ = ["CaptureOptions", "capture", "capture_session"]


def _load(name: str):
    from importlib import import_module

    return getattr(import_module(__name__ + ".capture"), name)


class _LinuxBackend(types.ModuleType):
    @property
    def capture(self):
        return _load("capture")

    @capture.setter
    def capture(self, value):
        pass  # the import system records the submodule under this name: keep the function

    def __getattr__(self, name: str):
        if name in ("CaptureOptions", "capture_session"):
            return _load(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _LinuxBackend
