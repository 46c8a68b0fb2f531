"""generate_dump: write a minidump of a live process."""

__version__ = "0.1.0"
