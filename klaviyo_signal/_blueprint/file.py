"""Blueprint files: JSON or TOML in, ``dict`` out, every problem reported at once.

The loader walks the whole file and collects each problem with its path
(``rules["Order Completed"].value: expected a dotted path, got 12``) before raising one
``BlueprintError``, so a user fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .._errors import BlueprintError, ValidationError
from .._klaviyo.json import JSON
from .paths import ITEM_ROOTS, ROOTS, check_path
from .rules import (
    ATTRIBUTES,
    LOCATION_FIELDS,
    CatchAll,
    IdentifyRule,
    ItemRule,
    Mapper,
    ProfileMap,
    PropertyMap,
    Rule,
    SubscribeRule,
    check_channels,
    check_json,
    check_metric,
    check_name,
    metric_name,
)


class _Blueprint(Protocol):
    """What ``dump`` reads of a Blueprint (named here, so this module never imports it)."""

    @property
    def rules(self) -> Mapping[str, Rule]: ...
    @property
    def page(self) -> Rule: ...
    @property
    def identify(self) -> IdentifyRule: ...
    @property
    def catch_all(self) -> CatchAll: ...
    @property
    def profile(self) -> ProfileMap: ...
    @property
    def mapper(self) -> Mapper | None: ...


__all__ = ["FORMAT_VERSION", "BlueprintError", "dump", "parse", "read"]

FORMAT_VERSION = 1
_RULE_KEYS = (
    "metric",
    "enabled",
    "properties",
    "value",
    "value_currency",
    "unique_id",
    "time",
    "mapper",
    "items",
)


def _key(path: str, key: str) -> str:
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _field(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Parser:
    """Walks raw data, collecting problems; each method returns None where it found one."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {text}")

    def table(self, value: object, path: str, keys: tuple[str, ...]) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a table (JSON object), got {value!r}")
            return None
        for key in value:
            if key not in keys:
                where = _field(path, key) if isinstance(key, str) else path
                self.problem(where, f"unknown key; expected one of {', '.join(map(repr, keys))}")
        return value

    def build(self, cls: Callable[..., Any], parts: dict[str, Any], before: int, path: str) -> Any:
        """Build ``cls`` only if its part of the data added no problem."""
        if len(self.problems) > before or None in parts.values():
            return None
        try:
            return cls(**parts)
        except ValidationError as exc:  # the parts check themselves too; report, don't raise
            self.problem(path, str(exc))
            return None

    def mapping(self, value: object, path: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            self.problem(path, f"expected a table of names, got {value!r}")
            return None
        return value

    def boolean(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, got {value!r}")
            return None
        return value

    def metric(self, value: object, path: str) -> str | None:
        problem = check_metric(value)
        if problem is not None:
            self.problem(path, problem)
            return None
        return value  # type: ignore[return-value]

    def names(self, value: object, path: str) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(path, f"expected a list of property names, got {value!r}")
            return None
        return tuple(value)

    def path(self, value: object, path: str, roots: tuple[str, ...]) -> str | None:
        problem = check_path(value, roots)
        if problem is not None:
            self.problem(path, problem)
            return None
        return value  # type: ignore[return-value]

    def paths(self, value: object, path: str, roots: tuple[str, ...]) -> tuple[str, ...] | None:
        if isinstance(value, list):
            if not value:
                self.problem(path, "expected a dotted path or a non-empty list of them, got []")
                return None
            found = [self.path(v, f"{path}[{i}]", roots) for i, v in enumerate(value)]
            return None if None in found else tuple(found)  # type: ignore[arg-type]
        one = self.path(value, path, roots)
        return None if one is None else (one,)

    def paths_map(
        self, value: object, path: str, roots: tuple[str, ...], targets: tuple[str, ...] = ()
    ) -> dict[str, tuple[str, ...]] | None:
        table = self.mapping(value, path)
        if table is None:
            return None
        out = {}
        for target, sources in table.items():
            if targets and target not in targets:
                self.problem(
                    _key(path, target), f"unknown key; expected one of {', '.join(targets)}"
                )
                continue
            out[target] = self.paths(sources, _key(path, target), roots)
        return None if None in out.values() else out  # type: ignore[return-value]

    def values(self, value: object, path: str) -> dict[str, JSON] | None:
        table = self.mapping(value, path)
        if table is None:
            return None
        ok = True
        for key, item in table.items():
            problem = check_json(item, _key(path, key))
            if problem is not None:
                self.problems.append(problem)
                ok = False
        return dict(table) if ok else None

    def renames(self, value: object, path: str) -> dict[str, str] | None:
        table = self.mapping(value, path)
        if table is None:
            return None
        bad = {k: v for k, v in table.items() if not isinstance(v, str) or not v}
        for key, target in bad.items():
            self.problem(_key(path, key), f"expected the new property name, got {target!r}")
        return None if bad else dict(table)

    def mapper(self, value: object, path: str) -> Mapper | None:
        if callable(value):
            return value
        if not isinstance(value, str) or value.count(":") != 1:
            self.problem(path, f"expected 'package.module:function', got {value!r}")
            return None
        module_name, _, attribute = value.partition(":")
        try:
            found: object = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except Exception as exc:  # an import runs user code: report any failure as a problem
            self.problem(path, f"cannot load mapper {value!r}: {type(exc).__name__}: {exc}")
            return None
        if not callable(found):
            self.problem(path, f"{value!r} is not a function, it is {found!r}")
            return None
        return found

    def properties(self, value: object, path: str, roots: tuple[str, ...]) -> PropertyMap | None:
        before = len(self.problems)
        table = self.table(
            value, path, ("keep", "drop", "rename", "sources", "defaults", "constants")
        )
        if table is None:
            return None
        parts: dict[str, Any] = {}
        keep = table.get("keep", "all")
        parts["keep"] = "all" if keep == "all" else self.names(keep, _field(path, "keep"))
        if "drop" in table:
            parts["drop"] = self.names(table["drop"], _field(path, "drop"))
        if "rename" in table:
            parts["rename"] = self.renames(table["rename"], _field(path, "rename"))
        if "sources" in table:
            parts["sources"] = self.paths_map(table["sources"], _field(path, "sources"), roots)
        for name in ("defaults", "constants"):
            if name in table:
                parts[name] = self.values(table[name], _field(path, name))
        return self.build(PropertyMap, parts, before, path)  # type: ignore[no-any-return]

    def _value_fields(
        self, table: Mapping[str, Any], path: str, roots: tuple[str, ...]
    ) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        if "properties" in table:
            parts["properties"] = self.properties(
                table["properties"], _field(path, "properties"), roots
            )
        for name in ("value", "value_currency"):
            if name in table:
                parts[name] = self.paths(table[name], _field(path, name), roots)
        return parts

    def items(self, value: object, path: str) -> ItemRule | None:
        keys = ("path", "metric", "properties", "value", "value_currency")
        before = len(self.problems)
        table = self.table(value, path, keys)
        if table is None:
            return None
        parts = self._value_fields(table, path, ITEM_ROOTS)
        for name in ("path", "metric"):
            if name not in table:
                self.problem(path, f"missing key {name!r}")
                parts[name] = None
        if "path" in table:
            parts["path"] = self.path(table["path"], _field(path, "path"), ROOTS)
        if "metric" in table:
            parts["metric"] = self.metric(table["metric"], _field(path, "metric"))
        return self.build(ItemRule, parts, before, path)  # type: ignore[no-any-return]

    def rule(self, value: object, path: str, default_metric: str) -> Rule | None:
        before = len(self.problems)
        table = self.table(value, path, _RULE_KEYS)
        if table is None:
            return None
        parts = self._value_fields(table, path, ROOTS)
        parts["metric"] = self.metric(table.get("metric", default_metric), _field(path, "metric"))
        if "enabled" in table:
            parts["enabled"] = self.boolean(table["enabled"], _field(path, "enabled"))
        for name in ("unique_id", "time"):
            if name in table:
                parts[name] = self.path(table[name], _field(path, name), ROOTS)
        if "mapper" in table:
            parts["mapper"] = self.mapper(table["mapper"], _field(path, "mapper"))
        if "items" in table:
            parts["items"] = self.items(table["items"], _field(path, "items"))
        return self.build(Rule, parts, before, path)  # type: ignore[no-any-return]

    def rules(self, value: object, path: str) -> dict[str, Rule] | None:
        table = self.mapping(value, path)
        if table is None:
            return None
        out = {
            name: self.rule(rule, _key(path, name), metric_name(name))
            for name, rule in table.items()
        }
        return None if None in out.values() else out  # type: ignore[return-value]

    def catch_all(self, value: object, path: str) -> CatchAll | None:
        table = self.table(value, path, ("action", "metric_style"))
        if table is None:
            return None
        action = table.get("action", "drop")
        style = table.get("metric_style", "snake_case")
        ok = True
        if action not in ("drop", "forward"):
            self.problem(_field(path, "action"), f"expected 'drop' or 'forward', got {action!r}")
            ok = False
        if style not in ("snake_case", "as_is"):
            self.problem(
                _field(path, "metric_style"), f"expected 'snake_case' or 'as_is', got {style!r}"
            )
            ok = False
        return CatchAll(action, style) if ok else None

    def identify(self, value: object, path: str) -> IdentifyRule | None:
        before = len(self.problems)
        table = self.table(value, path, ("enabled", "subscribe"))
        if table is None:
            return None
        parts: dict[str, Any] = {
            "enabled": self.boolean(table.get("enabled", True), _field(path, "enabled"))
        }
        if "subscribe" in table:
            parts["subscribe"] = self.subscribe(table["subscribe"], _field(path, "subscribe"))
        return self.build(IdentifyRule, parts, before, path)  # type: ignore[no-any-return]

    def subscribe(self, value: object, path: str) -> SubscribeRule | None:
        before = len(self.problems)
        table = self.table(value, path, ("trait", "list_id", "channels", "custom_source"))
        if table is None:
            return None
        if "trait" not in table:
            self.problem(path, "missing key 'trait'")
        checks = {
            "trait": check_name,
            "list_id": check_name,
            "channels": check_channels,
            "custom_source": check_name,
        }
        for name, check in checks.items():
            problem = check(table[name]) if name in table else None
            if problem is not None:
                self.problem(_field(path, name), problem)
        return self.build(SubscribeRule, dict(table), before, path)  # type: ignore[no-any-return]

    def profile(self, value: object, path: str) -> ProfileMap | None:
        before = len(self.problems)
        table = self.table(value, path, ("attributes", "location", "properties"))
        if table is None:
            return None
        parts: dict[str, Any] = {}
        if "attributes" in table:
            parts["attributes"] = self.paths_map(
                table["attributes"], _field(path, "attributes"), ROOTS, ATTRIBUTES
            )
        if "location" in table:
            parts["location"] = self.paths_map(
                table["location"], _field(path, "location"), ROOTS, LOCATION_FIELDS
            )
        if "properties" in table:
            parts["properties"] = self.properties(
                table["properties"], _field(path, "properties"), ROOTS
            )
        return self.build(ProfileMap, parts, before, path)  # type: ignore[no-any-return]


_TOP_KEYS = ("version", "rules", "page", "identify", "catch_all", "profile", "mapper")


def parse(data: object, source: str = "blueprint") -> dict[str, Any]:
    """Check a blueprint's raw data and return ``Blueprint`` keyword arguments.

    Raises:
        BlueprintError: Listing every problem found, each with its path.
    """
    parser = _Parser()
    table = parser.table(data, "", _TOP_KEYS)
    if table is None:
        raise BlueprintError(source, parser.problems)
    version = table.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        parser.problem("version", f"this library reads version {FORMAT_VERSION}, got {version!r}")
    steps: dict[str, Callable[[object, str], object]] = {
        "rules": parser.rules,
        "page": lambda value, path: parser.rule(value, path, "page_view"),
        "identify": parser.identify,
        "catch_all": parser.catch_all,
        "profile": parser.profile,
        "mapper": parser.mapper,
    }
    parts = {name: step(table[name], name) for name, step in steps.items() if name in table}
    if parser.problems:
        raise BlueprintError(source, parser.problems)
    return parts


def _mapper_ref(mapper: Mapper, where: str) -> str:
    """Return the ``module:function`` name a file uses for ``mapper``."""
    module = getattr(mapper, "__module__", None)
    qualname = getattr(mapper, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        found: object = sys.modules.get(module)
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is mapper:
            return f"{module}:{qualname}"
    raise ValidationError(
        f"{where}: the mapper {mapper!r} cannot be written to a file; a file names a "
        "mapper as 'module:function', so use a function defined at a module's top level"
    )


def _paths_out(paths: tuple[str, ...]) -> JSON:
    return paths[0] if len(paths) == 1 else list(paths)


def _properties_out(pmap: PropertyMap) -> dict[str, JSON]:
    out: dict[str, JSON] = {"keep": pmap.keep if pmap.keep == "all" else list(pmap.keep)}
    if pmap.drop:
        out["drop"] = list(pmap.drop)
    if pmap.rename:
        out["rename"] = dict(pmap.rename)
    if pmap.sources:
        out["sources"] = {k: _paths_out(v) for k, v in pmap.sources.items()}
    if pmap.defaults:
        out["defaults"] = dict(pmap.defaults)
    if pmap.constants:
        out["constants"] = dict(pmap.constants)
    return out


def _values_out(rule: Rule | ItemRule, out: dict[str, JSON]) -> dict[str, JSON]:
    out["properties"] = _properties_out(rule.properties)
    if rule.value:
        out["value"] = _paths_out(rule.value)
    if rule.value_currency:
        out["value_currency"] = _paths_out(rule.value_currency)
    return out


def _rule_out(rule: Rule, where: str) -> dict[str, JSON]:
    out = _values_out(rule, {"metric": rule.metric, "enabled": rule.enabled})
    if rule.unique_id != "message_id":
        out["unique_id"] = rule.unique_id
    if rule.time != "timestamp":
        out["time"] = rule.time
    if rule.mapper is not None:
        out["mapper"] = _mapper_ref(rule.mapper, _field(where, "mapper"))
    if rule.items is not None:
        items = rule.items
        out["items"] = _values_out(items, {"path": items.path, "metric": items.metric})
    return out


def _identify_out(rule: IdentifyRule) -> dict[str, JSON]:
    out: dict[str, JSON] = {"enabled": rule.enabled}
    sub = rule.subscribe
    if sub is not None:
        table: dict[str, JSON] = {"trait": sub.trait, "channels": list(sub.channels)}
        if sub.list_id is not None:
            table["list_id"] = sub.list_id
        if sub.custom_source is not None:
            table["custom_source"] = sub.custom_source
        out["subscribe"] = table
    return out


def dump(blueprint: _Blueprint) -> dict[str, JSON]:
    """Return the blueprint as file data that ``parse`` reads back to an equal blueprint.

    Raises:
        ValidationError: A mapper is not a module-level function a file could name.
    """
    profile = blueprint.profile
    out: dict[str, JSON] = {
        "version": FORMAT_VERSION,
        "catch_all": {
            "action": blueprint.catch_all.action,
            "metric_style": blueprint.catch_all.metric_style,
        },
        "identify": _identify_out(blueprint.identify),
        "page": _rule_out(blueprint.page, "page"),
        "rules": {
            name: _rule_out(rule, _key("rules", name)) for name, rule in blueprint.rules.items()
        },
        "profile": {
            "attributes": {k: _paths_out(v) for k, v in profile.attributes.items()},
            "location": {k: _paths_out(v) for k, v in profile.location.items()},
            "properties": _properties_out(profile.properties),
        },
    }
    if blueprint.mapper is not None:
        out["mapper"] = _mapper_ref(blueprint.mapper, "mapper")
    return out


def _toml(text: str, source: str) -> object:
    if sys.version_info >= (3, 11):
        import tomllib as toml  # noqa: PLC0415 - 3.11+ only, so imported where used
    else:  # pragma: no cover - Python 3.10 only
        try:
            toml = importlib.import_module("tomli")
        except ImportError:
            raise BlueprintError(
                source,
                ["TOML blueprints need Python 3.11 or the tomli package; or use JSON"],
            ) from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise BlueprintError(source, [f"not valid TOML: {exc}"]) from None


def read(path: str | Path) -> object:
    """Return the raw data of a ``.json`` or ``.toml`` blueprint file.

    Raises:
        BlueprintError: The file cannot be read or parsed, or has another suffix.
    """
    file = Path(path)
    source = str(file)
    if file.suffix not in (".json", ".toml"):
        raise BlueprintError(source, [f"expected a .json or .toml file, got {file.suffix!r}"])
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise BlueprintError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise BlueprintError(
            source, [f"not UTF-8 text: {exc.reason} at byte {exc.start}"]
        ) from None
    if file.suffix == ".toml":
        return _toml(text, source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BlueprintError(
            source, [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from None
