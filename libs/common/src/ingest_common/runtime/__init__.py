"""The one consumer runtime every service runs: poll, handle, acknowledge, drain."""
