"""The version of resviz, apart so that modules can name it without importing the package's API."""

__version__ = "0.1.0"
