"""One module per benchmark (and its report where the two would not fit in one small file); the
``bench_*.py`` scripts one level up run them."""
