"""The one error a benchmark raises when it cannot run."""


class BenchError(Exception):
    """The benchmark itself could not run (not: a target was missed)."""
