"""Coding exercises, one per method: each file holds the method's core function as a stub whose
docstring is its specification. Fill one in, then run `python -m exercises.check <method>`."""
