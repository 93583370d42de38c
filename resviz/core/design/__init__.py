"""Designing a net: the builder's editable spec (validation, undo, files) and code generation from a spec."""
