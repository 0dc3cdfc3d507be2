"""The docs cover every key, command and exit code the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forwarder.auth import AuthSettings
from forwarder.config import ForwarderSettings, PolicySettings
from forwarder.options import SinkOptions, SourceOptions
from forwarder.settings import HttpSettings, describe
from sinks.file import FileSettings
from sources.sample import SampleSettings

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROOT = DOCS.parent


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [
        (ForwarderSettings, ""),
        (PolicySettings, ""),
        (SourceOptions, ""),
        (SinkOptions, ""),
        (HttpSettings, "http."),
        (AuthSettings, "auth."),
        (FileSettings, ""),
        (SampleSettings, ""),
    ],
)
def test_configuration_md_documents_every_key(cls: type, prefix: str) -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))
    missing = [prefix + key for key, *_ in describe(cls) if prefix + key not in documented]
    assert not missing, f"docs/configuration.md lacks {missing}"


def _same_default(documented: str, actual: str) -> bool:
    a, b = documented.strip().strip("\"'"), actual.strip().strip("\"'")
    try:
        return float(a) == float(b)
    except ValueError:
        return a.lower() == b.lower()


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [(ForwarderSettings, ""), (PolicySettings, ""), (SourceOptions, ""), (SinkOptions, ""), (FileSettings, "")],
)
def test_configuration_md_defaults_match_the_code(cls: type, prefix: str) -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    documented = {k: d for k, d in re.findall(r"^\| `([^`]+)` \| [^|]+ \| `([^`]*)` \|", text, flags=re.M)}
    wrong = [
        f"{prefix}{key}: documented {documented[prefix + key]}, code {default}"
        for key, _, default, _ in describe(cls)
        if prefix + key in documented and not _same_default(documented[prefix + key], default)
    ]
    assert not wrong, wrong


def test_cli_md_documents_every_core_command_and_exit_code() -> None:
    from forwarder.cli import EXIT_OK, EXIT_PLUGIN, EXIT_UNDELIVERED, EXIT_USAGE, build_host

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in build_host([]).commands:
        assert f"dlpfwd {name}" in text, name
    for code in (EXIT_OK, EXIT_UNDELIVERED, EXIT_USAGE, EXIT_PLUGIN):
        assert re.search(rf"^\| {code} \|", text, flags=re.M), code


def test_readme_links_and_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in ("docs/configuration.md", "docs/schema.md", "docs/plugins.md", "docs/cli.md"):
        assert f"({link})" in text
    assert ".venv/bin/python -m pytest -q" in text


def test_plugins_md_documents_every_hook_and_contract_suite() -> None:
    import inspect

    from forwarder import hookspecs
    from forwarder.testing.contracts import iter_contract_suites

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("dlpfwd_"):
            assert f"`{name}(" in text, name
    for suite in iter_contract_suites():
        assert suite.__name__ in text
    assert "[project.entry-points.dlpfwd]" in text


def test_cli_md_documents_every_installed_command() -> None:
    from forwarder.cli import build_host

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [name for name in build_host(None).commands if f"dlpfwd {name}" not in text]
    assert not missing, f"docs/cli.md lacks {missing}"


def test_readme_links_every_guide_in_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"(docs/{p.name})" not in text]
    assert not missing, f"README.md does not link {missing}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_every_relative_link_in_readme_docs_and_packaging_resolves() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted((ROOT / "packaging").glob("**/README.md"))]
    broken = []
    for page in pages:
        for link in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _without_code(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md":
                headings = re.findall(r"^#+\s+(.*)$", _without_code(target.read_text(encoding="utf-8")), flags=re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, broken
