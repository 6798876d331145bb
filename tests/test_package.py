"""``import ctrlsparse`` is cheap: the public names are imported when first used (PEP 562)."""

import subprocess
import sys

import pytest

import ctrlsparse


def _imported_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_the_command_line_parser_imports_no_torch():
    # What `ctrlsparse --help` and `ctrlsparse run --help` execute.
    loaded = _imported_after("import ctrlsparse.cli\nctrlsparse.cli.build_parser().format_help()")
    assert "ctrlsparse" in loaded
    assert not loaded & {"torch", "cooper", "torch_pruning", "numpy", "matplotlib"}


def test_a_public_name_imports_its_subpackage_when_first_used():
    assert "torch" in _imported_after("from ctrlsparse import sparsify")


def test_every_public_name_resolves_and_is_listed():
    for name in ctrlsparse.__all__:
        assert getattr(ctrlsparse, name) is not None, name
    assert set(ctrlsparse.__all__) <= set(dir(ctrlsparse))
    assert ctrlsparse.fit is ctrlsparse.training.fit  # the same object as its home's
    assert ctrlsparse.SparsityProblem.__module__ == "ctrlsparse.problem.cmp"


def test_subpackages_are_attributes_as_before():
    assert ctrlsparse.gating.PurgeError.__name__ == "PurgeError"
    assert ctrlsparse.models.mlp is ctrlsparse.mlp


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'ctrlsparse' has no attribute 'sparsfy'"):
        ctrlsparse.sparsfy  # noqa: B018
    assert not hasattr(ctrlsparse, "nonexistent")


def test_the_version_is_the_installed_distribution():
    from importlib.metadata import version

    assert ctrlsparse.__version__ == version("ctrlsparse")
