"""Former home of the figures, kept because the docs name ``ctrlsparse.plot.dynamics``;
they live in :mod:`ctrlsparse.reports`."""

from ctrlsparse.reports import comparison, dynamics, gates, layer_colors, traces, tradeoff

__all__ = ["comparison", "dynamics", "gates", "layer_colors", "traces", "tradeoff"]
