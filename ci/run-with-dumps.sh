#!/usr/bin/env bash
# Wrap a CI test command with `generate_dump run`: crashing processes are dumped before
# they die, hanging ones when the timeout expires or the job is cancelled (SIGINT/SIGTERM).
# The command's exit status is kept (124 after a timeout).
#
#   ci/run-with-dumps.sh [--timeout 30m] [--dump-dir DIR] [--no-redact] [--trace] -- COMMAND [ARG...]
#
# Dumps are written with --redact (safe to upload) unless --no-redact is given.
# By default nothing is traced (crashes come from core files; see the README's
# "Default mode"); --trace (or RUN_TRACE=1) follows every process as its tracer instead.
# Environment: GENERATE_DUMP (the generate_dump command to use; default: the one on PATH,
# else installed into a private venv from this checkout), DUMP_DIR (default: minidumps).
# Afterwards the dumps, if any, are listed and their paths are written to
# $DUMP_DIR/dumps.txt; upload that directory as an artifact only when it is non-empty
# (see ci/README.md for GitLab CI and others).
set -uo pipefail

timeout=""
redact=(--redact)
dump_dir=${DUMP_DIR:-minidumps}
trace=${RUN_TRACE:-}
[ "$trace" = "0" ] || [ "$trace" = "false" ] && trace=""
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout=$2; shift 2 ;;
        --dump-dir) dump_dir=$2; shift 2 ;;
        --no-redact) redact=(--no-redact); shift ;;
        --trace) trace=1; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "usage: $0 [--timeout DURATION] [--dump-dir DIR] [--no-redact] [--trace] -- COMMAND [ARG...]" >&2
    exit 125
fi

gd=${GENERATE_DUMP:-}
if [ -z "$gd" ]; then
    if command -v generate_dump >/dev/null 2>&1; then
        gd=generate_dump
    else
        here=$(cd "$(dirname "$0")/.." && pwd)
        venv=${TMPDIR:-/tmp}/generate_dump-venv
        if [ ! -x "$venv/bin/generate_dump" ]; then
            python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q "$here" >&2 || {
                echo "run-with-dumps: cannot install generate_dump; running without it" >&2
                exec "$@"
            }
        fi
        gd="$venv/bin/generate_dump"
    fi
fi

args=(run --dump-on-signal "${redact[@]}" --output-dir "$dump_dir")
[ -n "$timeout" ] && args+=(--timeout "$timeout")
[ -n "$trace" ] && args+=(--trace)
"$gd" "${args[@]}" -- "$@"
status=$?

shopt -s nullglob
dumps=("$dump_dir"/*.dmp)
if [ ${#dumps[@]} -gt 0 ]; then
    printf '%s\n' "${dumps[@]}" > "$dump_dir/dumps.txt"
    echo "run-with-dumps: ${#dumps[@]} minidump(s) in $dump_dir:" >&2
    printf '  %s\n' "${dumps[@]}" >&2
    if [ -n "${GITHUB_OUTPUT:-}" ]; then
        echo "dump-count=${#dumps[@]}" >> "$GITHUB_OUTPUT"
    fi
else
    [ -n "${GITHUB_OUTPUT:-}" ] && echo "dump-count=0" >> "$GITHUB_OUTPUT"
fi
exit $status
