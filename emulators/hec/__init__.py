"""The Splunk HEC emulator (``dlpfwd hec-emulator``); see :mod:`emulators.hec.app`."""
