"""Speed benchmarks for diffnb (run with `make bench`; see benchmarks/speed.py)."""
