"""Benchmark harness for the canvas artifact store: see bench/README.md."""
