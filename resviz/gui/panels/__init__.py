"""The report's tabs beside the graph: Inspector, Issues and Summary."""
