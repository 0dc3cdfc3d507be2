"""``python -m emulators.tenant [options]``: the same as ``dlpfwd emulator`` (no plugin host needed)."""

from __future__ import annotations

import argparse
import sys

from emulators.tenant.plugin import configure_emulator, run_emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.tenant", description=__doc__)
    configure_emulator(parser)
    return run_emulator(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
