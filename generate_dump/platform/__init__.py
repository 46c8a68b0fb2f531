"""Platform facts that every backend and source shares: how Linux lays out /proc, ELF
processes and their files (Crashpad's util/linux beside snapshot/linux). No ptrace here."""
