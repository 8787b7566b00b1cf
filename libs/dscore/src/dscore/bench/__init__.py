"""Benchmarks of pieces that have no package of their own to live in (the codec: `dscore bench codec`)."""
