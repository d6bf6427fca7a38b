"""lisentry.detector."""
