"""lisentry.training."""
