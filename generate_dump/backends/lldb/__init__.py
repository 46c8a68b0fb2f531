"""LLDB backend (SB API): macOS processes, and Linux ones where LLDB is preferred."""

from .capture import LldbOptions, capture, snapshot_from_process

__all__ = ["LldbOptions", "capture", "snapshot_from_process"]
