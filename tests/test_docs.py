"""The docs stay in step with the code: settings, system checks, errors, links, commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rivet_django import exceptions
from rivet_django.conf import DEFAULTS

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    text = _read(DOCS / "reference" / "settings.md")
    missing = [key for key in DEFAULTS if f"`{key}`" not in text]
    assert not missing, f"docs/reference/settings.md does not describe RIVET keys: {missing}"


def test_no_unknown_setting_is_documented() -> None:
    text = _read(DOCS / "reference" / "settings.md").split("## Related Django settings")[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z_]+)` \| `", text, flags=re.MULTILINE))
    assert documented <= set(DEFAULTS), f"documented but not in conf.DEFAULTS: {sorted(documented - set(DEFAULTS))}"


def test_every_system_check_is_documented() -> None:
    ids = set(re.findall(r"id=\"(rivet_django\.[EW]\d{3})\"", _read(REPO / "rivet_django" / "checks.py")))
    assert ids, "no check ids found in rivet_django/checks.py"
    text = _read(DOCS / "reference" / "checks.md")
    missing = sorted(i for i in ids if f"`{i}`" not in text)
    assert not missing, f"docs/reference/checks.md does not list: {missing}"


def _public_error_classes() -> list[type[exceptions.RivetError]]:
    classes = []
    for name in exceptions.__all__:
        obj = getattr(exceptions, name)
        if isinstance(obj, type) and issubclass(obj, exceptions.RivetError) and obj is not exceptions.RivetError:
            classes.append(obj)
    return classes


@pytest.mark.parametrize("cls", _public_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_is_documented(cls: type[exceptions.RivetError]) -> None:
    text = _read(DOCS / "reference" / "errors.md")
    row = next((line for line in text.splitlines() if line.startswith(f"| `{cls.__name__}")), None)
    assert row is not None, f"docs/reference/errors.md has no table row for {cls.__name__}"
    if cls in (exceptions.PublicError, exceptions.UserError, exceptions.GuardError, exceptions.InternalError):
        return  # their code varies per raise
    assert f"`{cls.group}.{cls.code}`" in row, f"{cls.__name__} is {cls.group}.{cls.code}: {row}"
    assert f"| {cls.status_code} |" in row, f"{cls.__name__} is served with {cls.status_code}: {row}"


def test_relative_links_resolve() -> None:
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _read(page)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = _read(REPO / "README.md")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line for block in blocks[:2] for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "pip install -r requirements.txt && python manage.py migrate && python manage.py runactors",
        "./scripts/test.sh",
    ]
    assert "exec ./scripts/test.sh" in _read(REPO / ".ci" / "run")
