"""real_backend package."""
