"""The app's process-wide machinery, taken only in the app's own process: background workers, garbage-collection policy, and the PySide6 compatibility step."""
