"""`tickpipe top`: a live terminal view of prices, moving averages and pipeline health."""
