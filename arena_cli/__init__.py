"""`arena`: the command-line client of Ensemble Arena's JSON API, for scripts and CI pipelines.

It talks HTTP only and imports neither Django nor torch, so it starts fast and runs anywhere.
"""
