"""Linux backend: ptrace (python-ptrace) plus /proc."""

from .capture import CaptureOptions, capture

__all__ = ["CaptureOptions", "capture"]
