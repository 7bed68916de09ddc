"""Tool `sim`: a Binance-compatible simulated exchange for offline runs, tests and benchmarks."""
