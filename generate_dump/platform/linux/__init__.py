"""Linux facts: /proc parsing, process and system information, loaded ELF modules, the
memory a full dump holds, why ptrace was refused, JIT perf maps, the process tree."""
