"""dscore-chaos: the fault injector (see README.md)."""
