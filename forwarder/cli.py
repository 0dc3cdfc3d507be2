"""dlpfwd command line (placeholder until the CLI lands)."""
import sys


def main() -> int:
    print("dlpfwd: CLI not built yet", file=sys.stderr)
    return 2

