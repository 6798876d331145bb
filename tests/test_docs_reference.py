"""The site's reference pages are generated from the code (docs/hooks.py): nothing public is left out.

``make docs`` also checks the built HTML (``on_post_build``); these tests check the generated
Markdown without building the site.
"""

import importlib.util
from pathlib import Path

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
    (tmp_path / "reference" / "api").mkdir(parents=True)
    (tmp_path / "reference" / "cli").mkdir(parents=True)
    (tmp_path / "reference" / "api" / "index.html").write_text("<h2>fit</h2>")
    (tmp_path / "reference" / "cli" / "index.html").write_text("<code>ctrlsparse run</code>")
    missing = hooks.missing_from_site(tmp_path)
    assert "API: GDA" in missing and "API: fit" not in missing
    assert "CLI: ctrlsparse purge" in missing and "CLI: ctrlsparse run" not in missing
