"""Byte transports between endpoints' inboxes: the `Transport` protocol (`base`), the in-memory network
(`memory`) and Kafka. Import the implementation you need from its module; this package imports none of
them, so the sans-I/O executor can use the plain types of `base` alone."""
