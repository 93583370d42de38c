"""Presentation without Qt: the folded view, layouts, DOT, terminal text."""
