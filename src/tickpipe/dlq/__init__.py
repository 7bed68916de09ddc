"""Dead letters you can use: `tickpipe dlq stats|tail|replay` over the dead-letter topic."""
