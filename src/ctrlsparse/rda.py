"""Former home of the RDA optimizer, kept because the README names
``ctrlsparse.rda.RDA``; it lives in :mod:`ctrlsparse.training.rda`."""

from ctrlsparse.training.rda import RDA

__all__ = ["RDA"]
