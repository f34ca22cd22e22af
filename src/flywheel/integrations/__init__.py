"""Capture from frameworks agents already use (each behind its own extra)."""
