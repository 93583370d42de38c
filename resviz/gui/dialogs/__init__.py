"""Dialogs for opening models (which model in a Python file, the zoo) and for trusting a pickled file."""
