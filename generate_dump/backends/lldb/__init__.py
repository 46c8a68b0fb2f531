"""LLDB backend (SB API): macOS processes, and Linux ones where LLDB is preferred."""

from .capture import LldbOptions, capture, capture_session, snapshot_from_process

__all__ = ["LldbOptions", "capture", "capture_session", "snapshot_from_process"]
