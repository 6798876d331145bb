"""Model builders behind ``[model] name`` in problem files, and user models by import path."""

from ctrlsparse.models.cifar import WideResNet, resnet18, wide_resnet
from ctrlsparse.models.registry import (
    MODELS,
    ModelImportError,
    build_model,
    import_factory,
    register_model,
)
from ctrlsparse.models.resnet import ResNet, fashion_resnet
from ctrlsparse.models.small import lenet5, mlp

__all__ = [
    "MODELS",
    "ModelImportError",
    "ResNet",
    "WideResNet",
    "build_model",
    "fashion_resnet",
    "import_factory",
    "lenet5",
    "mlp",
    "register_model",
    "resnet18",
    "wide_resnet",
]
