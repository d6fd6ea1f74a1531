"""Every contract between services and with contributors, in one place."""
