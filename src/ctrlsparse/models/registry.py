"""The model registry behind ``[model] name``, and user models by import path (``[model] factory``)."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ctrlsparse.errors import CtrlsparseError
from ctrlsparse.models.cifar import build_resnet18, build_wrn28_10
from ctrlsparse.models.hf import llama
from ctrlsparse.models.resnet import fashion_resnet
from ctrlsparse.models.small import lenet5, mlp

ModelBuilder = Callable[..., nn.Module]
"""``builder(input_shape, num_classes, **kwargs)`` → a plain ``nn.Module``."""


def _mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)) -> nn.Module:
    return mlp(math.prod(input_shape), hidden, num_classes)


MODELS: dict[str, ModelBuilder] = {
    "mlp": _mlp,
    "lenet5": lambda input_shape, num_classes: lenet5(input_shape, num_classes),
    "fashion_resnet": lambda input_shape, num_classes: fashion_resnet(input_shape, num_classes),
    "wrn28_10": build_wrn28_10,
    "resnet18": build_resnet18,
    "llama": llama,
}


class ModelImportError(CtrlsparseError, ImportError):
    """``[model] factory`` names a module or function that cannot be imported."""


def register_model(name: str, builder: ModelBuilder) -> None:
    """Make ``builder(input_shape, num_classes, **kwargs)`` available as ``[model] name``.

    Examples:
        >>> register_model("tiny", lambda input_shape, num_classes: nn.Linear(4, num_classes))
    """
    MODELS[name] = builder


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model by name for inputs of ``input_shape`` (C, H, W).

    Examples:
        >>> build_model("lenet5", (1, 28, 28), 10).fc2.out_features
        10
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return MODELS[name](tuple(input_shape), num_classes, **kwargs)


def import_factory(path: str, folder: str | Path | None = None) -> Callable[..., nn.Module]:
    """The function named by ``"package.module:function"`` (a user's model builder).

    ``folder`` (a problem file's folder, as :func:`~ctrlsparse.load_problem` records it in
    ``[model] factory_dir``) is searched before ``sys.path``, so a ``models.py`` next to
    the problem file imports without ``PYTHONPATH``.

    Raises:
        ModelImportError: the path is malformed, the module does not import (with its
            error and the folders searched), or it has no such callable.

    Examples:
        >>> import_factory("ctrlsparse.models.resnet:fashion_resnet").__name__
        'fashion_resnet'
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ModelImportError(f"model factory {path!r} must read 'package.module:function'")
    folder = None if folder is None else str(Path(folder).resolve())
    if folder is not None:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way while importing
        searched = "sys.path" if folder is None else f"{folder} (the problem file's folder), then sys.path"
        raise ModelImportError(
            f"model factory {path!r}: importing {module_name!r} failed: {type(err).__name__}: {err} "
            f"(searched {searched})"
        ) from err
    finally:
        if folder is not None:
            sys.path.remove(folder)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise ModelImportError(f"model factory {path!r}: {module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ModelImportError(f"model factory {path!r} is not callable")
    return factory
