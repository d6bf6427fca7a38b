"""lisentry.datasets.sim."""
