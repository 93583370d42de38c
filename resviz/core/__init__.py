"""The headless engine of resviz: no Qt is imported anywhere under this package."""
