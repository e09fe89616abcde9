"""The ``mailplan`` process entry point (console script and ``python -m service``).

For ``mailplan run`` the early signal notes are installed before the command
line module and its dependencies are imported, so a SIGTERM in the first
instant of start-up still ends in a clean stop (``service.daemon.early``).
"""

from __future__ import annotations

import sys


def main() -> int:
    if "run" in sys.argv[1:]:
        from service.daemon.early import catch_early_signals

        catch_early_signals()
    from service.cli import main as cli_main

    return cli_main()
