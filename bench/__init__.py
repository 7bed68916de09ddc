"""Benchmarks of the whole pipeline and the baselines that bound it (`make bench`, `make bench-full`)."""
