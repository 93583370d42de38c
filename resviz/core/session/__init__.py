"""One opened model end to end: load, trace and analyse it, in resviz's own process or, for a user's Python file, in a child process."""
