"""``python -m emulators.logs_ingestion``: same as ``dlpfwd logs-ingestion-emulator``."""

import sys

from emulators.logs_ingestion.plugin import main

sys.exit(main())
