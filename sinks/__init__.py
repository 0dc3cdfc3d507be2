"""Built-in sink plugins. Each module is an entry point of the ``dlpfwd`` group and uses only
the public contracts of :mod:`forwarder`."""
