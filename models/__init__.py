"""lisentry.models."""
