"""The `generate_dump` console script and `python -m generate_dump`.

`generate_dump run ...` starts its command before click and the CLI load (see
run_session.fast_path): a CI wrapper should not make every wrapped command wait for
them. Where the native launcher was built (launcher/generate_dump.c), it has started the
command even before this interpreter, and run adopts it. Everything else goes to cli.main.
"""

import os
import sys

PYTHON_SCRIPT = "generate_dump-python"  # the launcher's Python half, beside it


def main() -> None:
    if os.path.basename(sys.argv[0]) == PYTHON_SCRIPT:  # run by the launcher: its name
        sys.argv[0] = sys.argv[0][:-len(PYTHON_SCRIPT)] + "generate_dump"
    if sys.argv[1:2] == ["run"] and sys.platform.startswith("linux"):
        from .run_session import adopted_command, fast_path

        # returns only if it leaves the work to the click command
        fast_path(sys.argv[2:], adopted_command())
    from .cli import main as cli_main

    cli_main()
