"""Repairs a user applies from a report: a patched in-memory copy of a Python model, or edits to a spec file."""
