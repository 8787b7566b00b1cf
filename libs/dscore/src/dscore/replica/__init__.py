"""A replica's logic around its protocol core, with no I/O: the executor both drivers run."""
