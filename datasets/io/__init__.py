"""lisentry.datasets.io."""
