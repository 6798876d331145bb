"""The site's reference pages are generated from the code (docs/hooks.py): nothing public is left out.

``make docs`` also checks the built HTML (``on_post_build``); these tests check the generated
Markdown without building the site.
"""

import importlib.util
from pathlib import Path

import pytest

import ctrlsparse
from ctrlsparse.cli import build_parser
from ctrlsparse.experiments import schema

spec = importlib.util.spec_from_file_location("docs_hooks", Path(__file__).parents[1] / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


def test_every_public_name_has_a_reference_entry():
    page = hooks.api_page()
    for name in ctrlsparse.__all__:
        assert f"::: ctrlsparse.{name}" in page or f"- `{name}`: " in page, name


def test_every_subcommand_has_its_help_in_the_cli_reference():
    page = hooks.cli_page()
    commands = [c for c, _ in hooks._subcommands(build_parser(), "ctrlsparse")]
    assert {"ctrlsparse run", "ctrlsparse bench overhead", "ctrlsparse purge"} <= set(commands)
    for command in commands:
        assert f"## `{command}`" in page
    assert "--target-density" in page and "--tensorboard" in page


def test_every_problem_file_key_is_in_the_schema_reference():
    page = hooks.schema_page()
    for section, cls in schema.SECTIONS.items():
        assert f"## `[{section}]`" in page
        for field in cls.__dataclass_fields__:
            assert f"| `{field}` |" in page, (section, field)
    assert "`hard_concrete`, `arm`" in page  # choices come from the code


def test_the_site_check_names_what_is_missing(tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "api.html").write_text("<h2>fit</h2>")
    (tmp_path / "reference" / "cli.html").write_text("<code>ctrlsparse run</code>")
    missing = hooks.missing_from_site(tmp_path)
    assert "API: GDA" in missing and "API: fit" not in missing
    assert "CLI: ctrlsparse purge" in missing and "CLI: ctrlsparse run" not in missing


roles = hooks.roles


@pytest.mark.parametrize(
    "written, markdown",
    [
        (":func:`~ctrlsparse.fit`", "[`fit`][ctrlsparse.fit]"),
        (":class:`ctrlsparse.GDA`", "[`ctrlsparse.GDA`][ctrlsparse.GDA]"),
        (":meth:`the step <ctrlsparse.GDA.step>`", "[`the step`][ctrlsparse.GDA.step]"),
        (":meth:`GDA.step\n    <ctrlsparse.GDA.step>`", "[`GDA.step`][ctrlsparse.GDA.step]"),
        (":py:attr:`~ctrlsparse.GDA.problem`", "[`problem`][ctrlsparse.GDA.problem]"),
        (":math:`\\gamma\\sqrt t`", "$\\gamma\\sqrt t$"),
        (
            ":mod:`torch.nn.utils.parametrize`",
            "[`torch.nn.utils.parametrize`](https://docs.pytorch.org/docs/stable/search.html"
            "?q=torch.nn.utils.parametrize)",
        ),
    ],
)
def test_a_docstring_role_becomes_a_cross_reference_or_math(written, markdown):
    assert roles.to_markdown(f"see {written}.") == f"see {markdown}."


def test_roles_resolve_in_the_docstring_s_scope_as_sphinx_does(tmp_path):
    griffe = pytest.importorskip("griffe")
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("from toy.core import Engine, run\n")
    (package / "core.py").write_text(
        "class Engine:\n"
        '    """Drive it with :meth:`step`; see :func:`run` and :func:`_helper`."""\n'
        "    def step(self):\n"
        '        """One step."""\n'
        "    def start(self):\n"
        "        self.speed = 1.0\n"
        "def run():\n"
        '    """Calls :meth:`Engine.step` and :class:`~toy.Engine`; :func:`nowhere` stays as written;\n'
        '    :attr:`Engine.speed` is set outside __init__, :attr:`Engine.sped` nowhere."""\n'
        "def _helper():\n"
        '    """Private."""\n'
    )
    toy = griffe.load("toy", search_paths=[tmp_path], extensions=griffe.load_extensions(roles.SphinxRoles()))
    engine, run = toy["core.Engine"].docstring.value, toy["core.run"].docstring.value
    assert "[`step`][toy.core.Engine.step]" in engine
    assert "[`run`][toy.core.run]" in engine
    assert "[`_helper`][toy.core]" in engine  # private: the public module that holds it
    assert "[`Engine.step`][toy.core.Engine.step]" in run
    assert "[`Engine`][toy.core.Engine]" in run  # the alias toy.Engine: where it is defined
    assert "[`nowhere`][nowhere]" in run  # autorefs fails the strict build on it
    assert "[`Engine.speed`][toy.core.Engine]" in run  # griffe does not see it: its class
    assert "[`Engine.sped`][toy.core.Engine.sped]" in run  # a typo still fails the build


def test_the_site_check_finds_roles_left_as_text(tmp_path):
    (tmp_path / "a.html").write_text("<p>see <a href='#x'><code>fit</code></a></p>")
    (tmp_path / "b.html").write_text(
        "<p>see :class:<code>~ctrlsparse.GDA</code> and :py:func:<code>f</code></p>"
    )
    assert hooks.raw_roles(tmp_path) == ["b.html: :class:`~ctrlsparse.GDA`", "b.html: :py:func:`f`"]


def test_the_modules_page_covers_every_public_module():
    page = hooks.modules_page()
    for module in ("ctrlsparse.problem.feasibility", "ctrlsparse.modelio", "ctrlsparse.training.monitor"):
        assert f"::: {module}\n" in page
    assert "::: ctrlsparse._removed" not in page
    assert "members: ['DATASETS'" in page  # a package shows what it defines, not what it imports


def test_the_site_check_finds_links_that_do_not_open_from_disk(tmp_path):
    (tmp_path / "howto").mkdir()
    (tmp_path / "howto" / "resume.html").write_text("")
    (tmp_path / "index.html").write_text(
        '<a href="howto/resume.html#top">ok</a> <a href="#here">ok</a> <a href="https://pytorch.org/">ok</a>'
        ' <a href="howto/">a folder</a> <img src="img/missing.png">'
    )
    assert hooks.links_off_disk(tmp_path) == ["index.html → howto/", "index.html → img/missing.png"]
