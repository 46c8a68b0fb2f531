"""Backends: each turns a live process into a Snapshot."""
