"""`tickpipe chart`: price, MA(5), MA(20) and volume of one symbol from the database, as a PNG."""
