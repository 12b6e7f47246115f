"""Ensemble Arena core library: suites, metrics, statistics and ensemble strategies.

This package is framework-free; it must never import Django.
"""

__version__ = "0.1.0"
