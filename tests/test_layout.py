"""The package's stages import one way only, read from the source (no import is run).

Data flows top to bottom: a call is checked (``_calls``), mapped (``_blueprint``) and sent
(``_delivery``), each stage using Klaviyo's side (``_klaviyo``) and the errors below it.
A stage never imports one above it, so none can depend on how a later one works.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "klaviyo_signal"

# What each stage may import, besides itself; lowest first.
ALLOWED: dict[str, set[str]] = {
    "_errors": set(),
    "_klaviyo": {"_errors", "_version"},
    "_calls": {"_errors", "_klaviyo"},
    "_blueprint": {"_errors", "_klaviyo", "_calls"},
    "_delivery": {"_errors", "_klaviyo", "_calls", "_blueprint"},
    "testing": {"_errors", "_klaviyo", "_version"},
}


def _imported_stages(path: Path) -> set[str]:
    """Return the top-level parts of klaviyo_signal that ``path`` imports, at any depth."""
    package = ["klaviyo_signal", *path.relative_to(PACKAGE).parts[:-1]]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        for name in names:
            parts = name.split(".")
            if parts[0] == "klaviyo_signal" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_a_stage_imports_only_the_stages_below_it(stage: str) -> None:
    root = PACKAGE / stage
    files = sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{stage}.py"]
    assert files
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {other}"
        for path in files
        for other in _imported_stages(path) - {stage}
        if other not in ALLOWED[stage]
    }
    assert not wrong, sorted(wrong)


def test_the_reader_sees_an_upward_import() -> None:
    """The check reads relative imports as Python resolves them (it can fail)."""
    assert _imported_stages(PACKAGE / "_delivery" / "queue.py") >= {"_klaviyo", "_blueprint"}
    assert "_errors" in _imported_stages(PACKAGE / "_klaviyo" / "json.py")
