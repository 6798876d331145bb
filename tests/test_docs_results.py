"""The results pages quote ``make demo`` from one record, and speak to readers.

``docs/results/demo.json`` is the ``results.json`` that ``make demo``'s ``ctrlsparse
compare`` writes (:class:`~ctrlsparse.reports.Results`). After a change that moves the
demo's numbers, refresh it and the pages:

    make demo && cp runs/demo/results.json docs/results/demo.json

then paste ``results_table`` of it (``python -c "from ctrlsparse.reports import Results,
results_table; print(results_table(Results.read('docs/results/demo.json')))"``) into the
README and docs/core.md. These tests fail while a page quotes other numbers.
"""

import re
from pathlib import Path

import pytest

from ctrlsparse.reports import Results, results_table

ROOT = Path(__file__).parents[1]
RECORD = ROOT / "docs" / "results" / "demo.json"
TABLE_PAGES = ["README.md", "docs/core.md"]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


def _missing_rows(page: str, results: Results) -> list[str]:
    return [line for line in results_table(results).splitlines() if line and line not in page]


@pytest.mark.parametrize("page", TABLE_PAGES)
def test_the_demo_table_on_the_page_is_the_recorded_demo_output(page):
    missing = _missing_rows((ROOT / page).read_text(), Results.read(RECORD))
    assert not missing, (
        f"{page} does not quote the demo record; refresh it (see this module's docstring): {missing}"
    )


def test_a_number_that_drifts_from_the_record_fails_the_check():
    results = Results.read(RECORD)
    name = next(iter(results.runs))
    results.runs[name].realized_density += 0.0021
    assert _missing_rows((ROOT / "README.md").read_text(), results)


def test_the_prose_quotes_the_recorded_demo_numbers():
    runs = Results.read(RECORD).runs
    core = (ROOT / "docs" / "core.md").read_text()
    quoted = re.search(r"realized − ε from ([+−-]\d\.\d{4})\s+to\s+([+−-]\d\.\d{4})", core)
    assert quoted, "docs/core.md should state the range of the demo's realized − ε"
    gaps = [
        s.realized[n] - e
        for s in runs.values()
        for n, e in s.all_targets().items()
        if n in (s.realized or {})
    ]
    low, high = (float(v.replace("−", "-")) for v in quoted.groups())
    assert (low, high) == (round(min(gaps), 4), round(max(gaps), 4))


@pytest.mark.parametrize("page", PAGES)
def test_pages_speak_to_readers(page):
    text = (ROOT / page).read_text()
    for pattern in (r"\bissue \d+", r"\bthe issue's\b", r"shared/papers", r"\bissues show\b"):
        assert not re.search(pattern, text, re.IGNORECASE), (page, pattern)
