"""Module identity from executable files: ELF build ids, PE CodeView, Mach-O UUIDs."""
