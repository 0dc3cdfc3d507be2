"""ServiceNow Table API emulator (see :mod:`emulators.servicenow.app`)."""
