"""Splunk runs this script for ``[dlpfwd://...]`` inputs (the file name is the scheme name)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dlpfwd_modinput import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
