"""mkdocs hooks: the reference pages are generated at build time, so nothing is hand-copied.

- ``reference/api.md``: one mkdocstrings block per name in ``ctrlsparse.__all__``, then the
  modules listed in ``MODULES``;
- ``reference/modules.md``: every other module, so that each docstring link has a target;
- ``reference/cli.md``: the ``--help`` of every ``ctrlsparse`` subcommand, from the argparse
  parser (:func:`ctrlsparse.cli.build_parser`);
- ``reference/problem-file.md``: every section and key of a problem file, from the config
  dataclasses (:mod:`ctrlsparse.experiments.schema`).

After the build, the site is checked: every public name and subcommand is shown, no Sphinx role
is left as text (``docs/roles.py`` rewrites them), and every link opens from disk.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import os
import pkgutil
import re
from pathlib import Path


def _load(path: Path):
    """A module of this folder (mkdocs loads this file by path, not as part of a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roles = _load(Path(__file__).with_name("roles.py"))

MODULES = {
    "ctrlsparse.gating.gates": "Gates",
    "ctrlsparse.training.methods": "Other methods",
    "ctrlsparse.problem.optimizer": "GDA as a torch optimizer",
    "ctrlsparse.integrations.transformers": "Hugging Face Trainer",
    "ctrlsparse.integrations.lightning": "Lightning",
    "ctrlsparse.problem.sharding": "FSDP2: whole gates",
    "ctrlsparse.training.sharded": "FSDP2: checkpoints",
    "ctrlsparse.reports": "Plots and reports",
}


_OPTIONS = ["    options:", "      heading_level: 3", ""]


def api_page() -> str:
    import ctrlsparse

    lines = [
        "# Python API",
        "",
        "Generated from `ctrlsparse.__all__` and the docstrings: every public name, in order.",
        "",
    ]
    removed = []
    for name in ctrlsparse.__all__:
        obj = getattr(ctrlsparse, name)
        if (obj.__doc__ or "").startswith("Removed."):
            removed.append(name)
            continue
        lines += [f"## `{name}`", "", f"::: ctrlsparse.{name}", *_OPTIONS]
    lines += ["## Removed names", ""]
    for name in removed:
        lines += [f"- `{name}`: {getattr(ctrlsparse, name).__doc__.removeprefix('Removed. ')}"]
    lines.append("")
    for module, title in MODULES.items():
        lines += [
            f"## {title}: `{module}`",
            "",
            f"::: {module}",
            "    options:",
            "      heading_level: 3",
            "",
        ]
    return "\n".join(lines)


def modules_page() -> str:
    """Every module of the package, so that a docstring's link to a module or helper has a target."""
    import ctrlsparse

    lines = [
        "# Modules",
        "",
        "Every module of `ctrlsparse`, in the order of the data flow, with its documented members.",
        "The names most programs need are on the [Python API](api.md) page.",
        "",
    ]
    for module in pkgutil.walk_packages(ctrlsparse.__path__, "ctrlsparse."):
        if module.name.endswith("__main__") or module.name.rpartition(".")[2].startswith("_"):
            continue
        if module.name in MODULES:
            lines += [f"## `{module.name}`", "", f"On the [Python API](api.md#{module.name}) page.", ""]
            continue
        lines += [f"::: {module.name}", "    options:", "      heading_level: 2"]
        if module.ispkg:  # what it imports is documented in its modules: only what it defines here
            lines.append(f"      members: {_defined_in(module.name)}")
        lines.append("")
    return "\n".join(lines)


def _defined_in(package: str) -> list[str]:
    """The public names that a package's ``__init__.py`` defines rather than imports."""
    spec = importlib.util.find_spec(package)
    names = []
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [name for name in names if not name.startswith("_")]


def _subcommands(parser: argparse.ArgumentParser, prefix: str):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, f"{prefix} {name}")


def cli_page() -> str:
    from ctrlsparse.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal's width: fix it
    lines = [
        "# Command line",
        "",
        "Generated from the argparse definitions (`ctrlsparse.cli.build_parser`).",
        "",
    ]
    for command, parser in _subcommands(build_parser(), "ctrlsparse"):
        lines += [f"## `{command}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def _key_notes(cls: type) -> dict[str, str]:
    """Per field: its attribute docstring, else the comment lines just above it in the source."""
    source = inspect.getsource(cls)
    source_lines = source.splitlines()
    body = ast.parse(source).body[0].body
    notes: dict[str, str] = {}
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign):
            continue
        name = node.target.id
        following = body[i + 1] if i + 1 < len(body) else None
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            notes[name] = " ".join(following.value.value.split())
            continue
        comments, line = [], node.lineno - 2
        while line >= 0 and source_lines[line].strip().startswith("#"):
            comments.insert(0, source_lines[line].strip().lstrip("# "))
            line -= 1
        notes[name] = " ".join(comments)
    return notes


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", dict: "table"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value!r}`".replace("'", '"')


def schema_page() -> str:
    from ctrlsparse.experiments import schema

    lines = [
        "# Problem file",
        "",
        "Generated from the config dataclasses (`ctrlsparse.experiments.schema`). A problem file is",
        "TOML with a top-level `name` (and optional `description`) and the sections below. Unknown",
        "keys and wrong types are errors that name the key and the valid choices.",
        "",
    ]
    for section, cls in schema.SECTIONS.items():
        doc = roles.to_markdown(" ".join((cls.__doc__ or "").split()))
        lines += [f"## `[{section}]`", "", doc if not doc.startswith(cls.__name__ + "(") else "", ""]
        lines += ["| key | type | default | choices | notes |", "|---|---|---|---|---|"]
        notes = _key_notes(cls)
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            shown = ", ".join(f"`{c}`" for c in choices) if choices else ""
            note = notes.get(f.name, "").replace("|", "\\|")
            types = _type_name(f.metadata.get("types", ()))
            lines.append(f"| `{f.name}` | {types} | {_default(f)} | {shown} | {note} |")
        lines.append("")
    return "\n".join(lines)


PAGES = {
    "reference/api.md": api_page,
    "reference/modules.md": modules_page,
    "reference/cli.md": cli_page,
    "reference/problem-file.md": schema_page,
}


def on_files(files, config):
    from mkdocs.structure.files import File

    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files


def missing_from_site(site: Path) -> list[str]:
    """Public names and CLI subcommands that the built site does not show."""
    import ctrlsparse
    from ctrlsparse.cli import build_parser

    api = (site / "reference" / "api.html").read_text()
    cli = (site / "reference" / "cli.html").read_text()
    missing = [f"API: {name}" for name in ctrlsparse.__all__ if not re.search(rf"\b{name}\b", api)]
    for command, _ in _subcommands(build_parser(), "ctrlsparse"):
        if f"<code>{command}</code>" not in cli:
            missing.append(f"CLI: {command}")
    return missing


def raw_roles(site: Path) -> list[str]:
    """Sphinx roles that reached the built pages as text (``:class:`` then code), page by page."""
    found = []
    for page in sorted(site.rglob("*.html")):
        for role in sorted(set(re.findall(r":(?:py:)?[a-z]+:<code>[^<]*", page.read_text()))):
            found.append(f"{page.relative_to(site)}: {role.replace('<code>', '`')}`")
    return found


def links_off_disk(site: Path) -> list[str]:
    """Links that fail when ``site/`` is opened from disk: no such file, or a folder (which a
    browser shows as a directory listing, not as its ``index.html``)."""
    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":  # a web server's error page: its links are absolute by design
            continue
        for link in sorted(set(re.findall(r'(?:href|src)="([^"#?]*)[#?"]', page.read_text()))):
            if not link or re.match(r"[a-z]+:", link):  # same page, or http:, mailto:, data:
                continue
            if not (page.parent / link).is_file():
                broken.append(f"{page.relative_to(site)} → {link}")
    return broken


def on_post_build(config):
    site = Path(config["site_dir"])
    missing = missing_from_site(site)
    if missing:
        raise RuntimeError(f"the built site lacks: {', '.join(missing)}")
    broken = links_off_disk(site)
    if broken:
        raise RuntimeError(f"links that do not open from disk: {'; '.join(broken[:20])}")
    raw = raw_roles(site)
    if raw:
        raise RuntimeError(
            "Sphinx roles left as text (docs/roles.py rewrites :mod: :func: :class: :meth: :attr: "
            f":data: :exc: :obj: :math:): {'; '.join(raw)}"
        )
