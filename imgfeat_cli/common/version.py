"""The package version: one place, read by outputs that record what produced them."""
__version__ = "0.1.0"
