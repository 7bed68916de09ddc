"""`tickpipe run` (what `make run` calls): the whole pipeline as local processes, with a live view."""
