"""``python -m forwarder`` is the ``dlpfwd`` command."""

import sys

from forwarder.cli import main

sys.exit(main())
