import sys

if sys.argv[1:2] == ["run"] and sys.platform.startswith("linux"):
    # Start the command before click and the CLI load (see run_session.fast_path).
    from .run_session import fast_path

    fast_path(sys.argv[2:])

from .cli import main

main()
