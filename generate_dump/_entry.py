"""The `generate_dump` console script and `python -m generate_dump`.

`generate_dump run ...` starts its command before click and the CLI load (see
run_session.fast_path): a CI wrapper should not make every wrapped command wait for
them. Everything else goes to cli.main.
"""

import sys


def main() -> None:
    if sys.argv[1:2] == ["run"] and sys.platform.startswith("linux"):
        from .run_session import fast_path

        fast_path(sys.argv[2:])  # returns only if it leaves the work to the click command
    from .cli import main as cli_main

    cli_main()
