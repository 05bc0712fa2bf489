"""Developer tools run with `python -m engines.tools.<name>`."""
