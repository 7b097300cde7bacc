"""lt_bench: long-tailed recognition benchmarks around the Gumbel Optimized Loss (GOL)."""

__version__ = "0.3.0"
