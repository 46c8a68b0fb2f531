"""Windows backend: kernel32/ntdll through ctypes (64-bit x64 processes)."""

from .capture import WindowsOptions, capture, capture_session

__all__ = ["WindowsOptions", "capture", "capture_session"]
