"""`generate_dump watch`: dump processes when something happens (ProcDump-style triggers)."""
