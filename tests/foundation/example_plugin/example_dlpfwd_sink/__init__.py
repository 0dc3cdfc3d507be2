"""Example dlpfwd plugins used by the foundation tests."""
