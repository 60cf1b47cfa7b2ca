"""Benchmark scripts (``python -m benchmarks.<name>``): each prints a table
and writes its JSON under benchmarks/results/; see benchmarks/README.md."""
