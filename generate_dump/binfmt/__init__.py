"""Executable file formats (ELF, PE, Mach-O, ELF core notes), parsed from bytes or files:
module identity (ELF build ids, PE CodeView, Mach-O UUIDs) and core-file note layouts."""
