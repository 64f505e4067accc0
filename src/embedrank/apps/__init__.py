"""Applications on top of the library: the ``embedrank`` command line, the demo and the
training commands."""
