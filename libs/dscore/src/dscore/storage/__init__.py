"""Stable storage behind one atomic write per `Ready`: the `Storage` protocol (`base`), and its in-memory
(`memory`) and Redis forms. Import the implementation you need from its module; this package imports
none of them, so the sans-I/O executor can use the plain types of `base` alone."""
