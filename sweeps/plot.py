"""Matplotlib for the reports, files only."""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt
