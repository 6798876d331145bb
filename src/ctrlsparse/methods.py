"""Former home of the weight-sparsity trainers, kept because the README names
``ctrlsparse.methods.L1RDA``; they live in :mod:`ctrlsparse.training.methods`."""

from ctrlsparse.training.methods import L1RDA, MagnitudePruning

__all__ = ["L1RDA", "MagnitudePruning"]
