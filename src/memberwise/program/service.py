"""Load and check a program file; the built-in program used when none is configured.

A program that loads is safe to build with: every rule has been checked against the field
catalog. A program that does not load is refused with one :class:`ProgramError` listing every
problem found, each as ``FILE:LINE: PATH: what is wrong -- how to fix it``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from memberwise.kit.errors import InvalidRequest
from memberwise.program.schemas import Program


class ProgramError(InvalidRequest):
    """A program file that cannot be used.

    ``details``: ``{"file": ..., "problems": [{"path", "line", "message", "fix"}, ...]}``; a
    rule's problem also has ``rule`` (its name) and ``position`` (1-based, in the rule's text).
    """

    code = "invalid_program"


YAML_FIX = (
    "check the indentation and quoting on that line and the one above; quote a rule that "
    "contains ': ' or starts with a quote or a bracket, e.g. rule: \"region in ('浙江')\""
)


def load_program(path: str | Path) -> Program:
    """The program in a YAML file.

    Raises ProgramError when the file cannot be read, is not YAML, or does not describe a valid
    program (unknown key, bad value, a rule that does not check against the field catalog).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(
            source,
            _problem("", None, "the program file does not exist", _MISSING_FIX),
        ) from None
    except UnicodeDecodeError as exc:
        raise _error(
            source,
            _problem("", None, f"the file is not UTF-8 text ({exc.reason})", "save it as UTF-8"),
        ) from None
    except OSError as exc:
        raise _error(
            source,
            _problem("", None, f"cannot read the file: {exc.strerror}", "check the path"),
        ) from None
    return parse_program(text, source=source)


_MISSING_FIX = "check the path (MEMBERWISE_PROGRAM_FILE), or unset it to use the built-in program"


def parse_program(text: str, *, source: str = "<program>") -> Program:
    """The program in YAML ``text``; ``source`` names it in errors. Raises ProgramError."""
    node, data = _read_yaml(text, source)
    if data is None:
        raise _error(
            source, _problem("", None, "the program is empty", "write at least 'name: ...'")
        )
    if not isinstance(data, dict):
        raise _error(
            source,
            _problem(
                "",
                _line(node),
                f"the program must be a mapping of keys, not a {type(data).__name__}",
                "start with 'name: my_program' and add tags, segments, personas below it",
            ),
        )
    try:
        return Program.model_validate(data)
    except ValidationError as exc:
        problems = [p for error in exc.errors() for p in _problems(error, node)]
        raise _error(source, *problems) from None


_loaded: dict[tuple[str, int], Program] = {}


def current_program(path: Path | None) -> Program:
    """The program in ``path`` (re-read when the file changes), or the built-in default.

    The API calls this per request: a stat, and a parse only after the operator edited the file
    (a file that no longer validates is refused with ProgramError, the running one stays loaded
    for the next good edit).
    """
    if path is None:
        return default_program()
    try:
        stamp = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return load_program(path)  # raises ProgramError naming the missing or unreadable file
    found = _loaded.get(stamp)
    if found is None:
        found = load_program(path)
        _loaded.clear()
        _loaded[stamp] = found
    return found


@cache
def default_program() -> Program:
    """The built-in program: no tags, the lifecycle segments, default personas."""
    return Program(name="default")


# -- reading YAML with line numbers --------------------------------------------------------------


class _DuplicateKey(ConstructorError):
    """A mapping with the same key twice (valid YAML, but PyYAML would keep only the last)."""


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _DuplicateKey(
                    problem=f"the key {key!r} appears twice", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, source: str) -> tuple[Node | None, Any]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _DuplicateKey as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        fix = "remove or rename one (YAML would silently keep only the last)"
        raise _error(source, _problem("", line, str(exc.problem), fix)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f"column {mark.column + 1}: " if mark else ""
        what = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        raise _error(
            source, _problem("", line, f"{where}not valid YAML: {what}", YAML_FIX)
        ) from None
    except yaml.YAMLError as exc:
        raise _error(source, _problem("", None, f"not valid YAML: {exc}", YAML_FIX)) from None
    finally:
        loader.dispose()
    return node, data


def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _locate(root: Node | None, loc: tuple[str | int, ...]) -> tuple[str, int | None]:
    """A pydantic location as a path a reader finds in the file (``segments[2].rule``) and the
    line it is on (the nearest enclosing line when the key is missing)."""
    path = ""
    node = root
    line = _line(root)
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the dict key itself"
            continue
        if isinstance(node, ScalarNode):
            break  # a tag written as a bare rule: "tags.x" is the place, not "tags.x.rule"
        child: Node | None = None
        if isinstance(node, SequenceNode) and isinstance(part, int):
            path += f"[{part}]"
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = _line(child)
        else:
            path += f".{part}" if path else str(part)
            if isinstance(node, MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                        child = value_node
                        line = _line(key_node)
                        break
        node = child
    return path, line


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys a program allows at ``loc`` (for "unknown key" messages), if a model is there."""
    current: Any = Program
    skip = False
    for part in loc:
        if skip:  # a dict key or list index: the model stays the same
            skip = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        annotation: Any = info.annotation
        origin = get_origin(annotation)
        if origin in (Union, UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
            origin = get_origin(annotation)
        if origin in (dict, tuple, list):
            skip = True  # tuple[X, ...] and list[X] hold X; dict[K, X] holds X
            args = [a for a in get_args(annotation) if a is not Ellipsis]
            annotation = args[-1] if origin is dict else args[0]
        current = annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _problems(error: Any, root: Node | None) -> list[dict[str, Any]]:
    """One pydantic error as problems with a path and a line."""
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "program":
        found = []
        for item in ctx["problems"]:
            path, line = _locate(root, (*loc, *item["at"]))
            extra = {k: item[k] for k in ("rule", "position") if k in item}
            found.append(_problem(path, line, item["message"], item["fix"], **extra))
        return found
    path, line = _locate(root, loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        known = f"; the keys allowed here: {', '.join(allowed)}" if allowed else ""
        return [
            _problem(
                path, line, f"unknown key {loc[-1]!r}", f"remove it or fix its spelling{known}"
            )
        ]
    if kind == "missing":
        return [_problem(path, line, f"{loc[-1]!r} is required", "add it")]
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if kind != "value_error" and isinstance(given, str | int | float | bool):
        message += f" (found {given!r})"
    fix = "" if kind == "value_error" else "correct the value"
    return [_problem(path, line, message, fix)]


def _problem(path: str, line: int | None, message: str, fix: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "line": line, "message": message, "fix": fix, **extra}


def _error(source: str, *problems: dict[str, Any]) -> ProgramError:
    lines = []
    for p in problems:
        where = f"{source}:{p['line']}" if p["line"] is not None else source
        path = f" {p['path']}:" if p["path"] else ""
        fix = f" -- {p['fix']}" if p["fix"] else ""
        lines.append(f"{where}:{path} {p['message']}{fix}")
    head = "" if len(lines) == 1 else f"{source}: {len(lines)} problems in the program\n"
    return ProgramError(head + "\n".join(lines), details={"file": source, "problems": problems})
