"""The docstrings' examples run (those marked ``+SKIP`` need data, a run directory or a model)."""

import doctest
import importlib
import pkgutil

import pytest

import ctrlsparse

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(ctrlsparse.__path__, "ctrlsparse.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={"torch": importlib.import_module("torch"), **vars(module)}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, (
        f"{results.failed} of {results.attempted} examples in {name} failed (see above)"
    )
