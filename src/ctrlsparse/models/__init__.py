"""Model builders behind ``[model] name`` in problem files."""

from ctrlsparse.models.small import MODELS, build_model, lenet5, mlp

__all__ = ["MODELS", "build_model", "lenet5", "mlp"]
