"""Linux backend: ptrace (python-ptrace) plus /proc."""

from .capture import CaptureOptions, capture, capture_session

__all__ = ["CaptureOptions", "capture", "capture_session"]
