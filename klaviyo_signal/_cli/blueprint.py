"""``klaviyo-signal explain`` and ``klaviyo-signal blueprint show|validate``.

Both read a blueprint the way an app would (a built-in variant, or a JSON/TOML file), so
what the command line says is what the app will do.
"""

from __future__ import annotations

from typing import TextIO, cast

from .._blueprint.blueprint import Blueprint, default_blueprint
from .._errors import BlueprintError, ConfigurationError, ValidationError
from .._explain import ExplainKind, explain
from .._klaviyo.json import JSON, pretty
from .lines import BadLine, parse_line

__all__ = ["run_blueprint", "run_explain"]


def _load(path: str | None, variant: str) -> Blueprint:
    return Blueprint.from_file(path) if path else default_blueprint(variant)


def _dump(data: JSON, out: TextIO) -> None:
    out.write(pretty(data) + "\n")


def run_blueprint(action: str, path: str | None, variant: str, out: TextIO, err: TextIO) -> int:
    """Show a blueprint as JSON, or validate a file; return the exit code."""
    try:
        blueprint = _load(path, variant)
    except BlueprintError as exc:
        err.write(f"klaviyo-signal blueprint {action}: {exc}\n")
        return 1
    except (ConfigurationError, ValidationError, OSError) as exc:
        err.write(f"klaviyo-signal blueprint {action}: {exc}\n")
        return 2
    if action == "show":
        _dump(cast(JSON, blueprint.to_dict()), out)
        return 0
    rules = len(blueprint.rules)
    out.write(f"{path or variant}: valid ({rules} event rule{'s' if rules != 1 else ''})\n")
    return 0


def run_explain(
    message: str,
    *,
    path: str | None,
    variant: str,
    require_consent: bool,
    revision: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """Explain one Segment-style message (a JSON object) under ``revision``; return the
    exit code."""
    try:
        blueprint = _load(path, variant)
        kind, fields = parse_line(message)
        explanation = explain(
            blueprint=blueprint,
            require_consent=require_consent,
            default_phone_region=None,
            revision=revision,
            kind=cast(ExplainKind, kind),  # parse_line returns only the Client's calls
            args=(),
            kwargs=fields,
        )
    except (BadLine, ValidationError, ConfigurationError, OSError) as exc:
        err.write(f"klaviyo-signal explain: {exc}\n")
        return 2
    _dump(
        {
            "status": explanation.status,
            "reason": explanation.reason,
            "rule": explanation.rule,
            "requests": [
                {
                    "method": r.method,
                    "path": r.path,
                    "headers": cast(JSON, dict(r.headers)),
                    "body": r.body,
                }
                for r in explanation.requests
            ],
        },
        out,
    )
    return 0
