"""The version of xpcnn, on the ground floor so that files written below the package top can record it."""
__version__ = "0.1.0"
