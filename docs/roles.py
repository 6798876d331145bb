"""Griffe extension: the docstrings' Sphinx roles become links (and math) on the site.

The docstrings are written with Sphinx roles (``:func:`~ctrlsparse.fit```, ``:math:`\\beta```)
while the site renders them as Markdown, which would show the roles as raw text. Before
rendering, every role is rewritten:

- ``:mod:``, ``:func:``, ``:class:``, ``:meth:``, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:``:
  an autorefs cross-reference ``[`title`][path]``, the target resolved in the docstring's scope
  as Sphinx does (``fit``, ``GDA.step``, ``~Gate.parameter``). A private helper (``_scale_inputs``)
  links to the public object that holds it, as the site leaves private names out; a name the
  package exports (``ctrlsparse.GDA``) links to its entry on the API page. A target that
  the site does not document fails the strict build ("Could not find cross-reference target").
  Names outside ctrlsparse (``torch.nn.utils.parametrize``) link to a search of their project's
  documentation.
- ``:math:`x``` becomes ``$x$``, which arithmatex and KaTeX render.

A role this extension does not know is left alone, and ``docs/hooks.py`` fails the build when
it finds one in the built pages. The hooks also rewrite the docstrings they copy into generated
pages with :func:`to_markdown`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable

import griffe

ROLE = re.compile(r":(?:py:)?(mod|func|class|meth|attr|data|exc|obj|math):`([^`]+)`")
TITLED = re.compile(r"(.*?)\s*<([^<>]+)>$", re.DOTALL)  # :func:`title <target>`, maybe over two lines
EXTERNAL = {"torch": "https://docs.pytorch.org/docs/stable/search.html?q={}"}


def _target(obj: griffe.Object, exported: dict[str, str], name: str) -> str:
    """The canonical path of ``name`` as written in ``obj``'s docstring (``GDA.step``, ``fit``)."""
    head, _, rest = name.partition(".")
    if head in EXTERNAL:
        return name
    if head != obj.package.name:
        try:
            head = obj.resolve(head)
        except griffe.NameResolutionError:
            return name  # left for autorefs to report
    path = f"{head}.{rest}" if rest else head
    # Where it is defined: `ctrlsparse.problem.GDA.step` is `ctrlsparse.problem.gda.GDA.step`.
    with contextlib.suppress(griffe.AliasResolutionError, griffe.CyclicAliasError):
        try:
            path = obj.modules_collection[path].canonical_path
        except KeyError:
            path = _holder(obj.modules_collection, path)
    # The site leaves private helpers out (filters "!^_"): link to the public object holding one.
    parts = path.split(".")
    while len(parts) > 1 and parts[-1].startswith("_") and not parts[-1].startswith("__"):
        parts.pop()
    path = ".".join(parts)
    # A name the package exports links to its entry on the API page, not in its module.
    for canonical, public in exported.items():
        if path == canonical or path.startswith(canonical + "."):
            return public + path[len(canonical) :]
    return path


def _holder(collection: griffe.ModulesCollection, path: str) -> str:
    """An instance attribute that griffe does not see (set outside ``__init__``, e.g. in a
    dataclass's ``__post_init__``) links to its class; any other unknown path stays as it is."""
    parent, _, member = path.rpartition(".")
    with contextlib.suppress(KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        holder = collection[parent]
        if holder.is_class and re.search(rf"self\.{member}\s*(:[^=\n]*)?=", holder.source):
            return holder.canonical_path
    return path


def _exported(package: griffe.Module) -> dict[str, str]:
    """Where each name in the package's ``__all__`` is defined → its public path."""
    exported = {}
    for name in package.exports or ():
        with contextlib.suppress(KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            exported[package.members[name].canonical_path] = f"{package.path}.{name}"
    return exported


def to_markdown(text: str, resolve: Callable[[str], str] = lambda name: name) -> str:
    """``text`` with its Sphinx roles rewritten; ``resolve`` turns a target as written into a path.

    Examples:
        >>> to_markdown("see :func:`~ctrlsparse.fit` and :math:`\\beta`")
        'see [`fit`][ctrlsparse.fit] and $\\beta$'
    """

    def replace(match: re.Match) -> str:
        role, written = match.groups()
        if role == "math":
            return f"${written}$"
        titled = TITLED.match(written)
        title, name = titled.groups() if titled else (None, written)
        name = name.strip().lstrip("~")
        if title is None:
            title = name.rsplit(".", 1)[-1] if written.startswith("~") else name
        title = " ".join(title.split())
        path = resolve(name)
        root = path.partition(".")[0]
        if root in EXTERNAL:
            return f"[`{title}`]({EXTERNAL[root].format(path)})"
        return f"[`{title}`][{path}]"

    return ROLE.sub(replace, text)


def _objects(obj: griffe.Object):
    """``obj`` and everything defined in it (not what it imports)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring before mkdocstrings renders it."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        # Once the whole package is loaded, so that every import between its modules resolves.
        exported = _exported(pkg)
        for obj in _objects(pkg):
            if obj.docstring is not None:
                resolve = functools.partial(_target, obj, exported)
                obj.docstring.value = to_markdown(obj.docstring.value, resolve)
