"""``python -m emulators.hec``: run the HEC emulator (same options as ``dlpfwd hec-emulator``)."""

from emulators.hec.plugin import main

raise SystemExit(main())
