"""Terraform read with python-hcl2 and evaluated far enough to name what it declares: values, references, counts.

python-hcl2 parses the files but leaves every expression as text (`"${var.prefix}-x"`). This module evaluates that
text for one set of input variables: literals, templates, `var.`/`local.`/`each.` references, resource and data
attributes (the ones Terraform computes are derived the way the provider does, e.g. a service account's `email` and
`member`), conditionals, comparisons, for-expressions and the functions the module uses. Evaluation is lazy, so a
branch or attribute nobody asks for (a file hash, an archive) is never computed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import yaml


class HclError(Exception):
    """An expression this evaluator cannot read or evaluate."""


def load(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of the *.tf files in `directory`, merged by kind (resource, variable, ...)."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, blocks in _parsed(str(path), path.stat().st_mtime_ns).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


@functools.cache
def _parsed(path: str, mtime: int) -> dict[str, Any]:
    """One file's blocks; parsing is the slow part, and tests load the same files many times (never mutated)."""
    return dict(hcl2.loads(Path(path).read_text()))


def unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def labelled(blocks: list[Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of `resource`/`data`-style blocks, and (name, "", body) of `variable`-style ones."""
    for block in blocks:
        for first, inner in block.items():
            if first.startswith("__"):
                continue
            if isinstance(inner, dict) and "__is_block__" not in inner:
                for second, body in inner.items():
                    yield unquote(first), unquote(second), body
            else:
                yield unquote(first), "", inner


# --- expressions ---------------------------------------------------------------------------------------------------

Node = tuple[Any, ...]
_NUMBER = re.compile(r"\d+(\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}


class _Parser:
    """Recursive descent over HCL expression text into nested tuples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> HclError:
        return HclError(f"{message} at {self.pos} in {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> bool:
        if self.peek(token):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            raise self.fail(f"expected {token!r}")

    def whole(self) -> Node:
        node = self.expression()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail("unexpected text")
        return node

    def expression(self) -> Node:
        condition = self.binary(0)
        if self.take("?"):
            yes = self.expression()
            self.expect(":")
            no = self.expression()
            return ("if", condition, yes, no)
        return condition

    _LEVELS = (("||",), ("&&",), ("==", "!="), ("<=", ">=", "<", ">"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            # Two-character operators come first in their level, so "<=" is never read as "<".
            for operator in self._LEVELS[level]:
                if self.peek(operator):
                    self.pos += len(operator)
                    node = ("op", operator, node, self.binary(level + 1))
                    break
            else:
                return node

    def unary(self) -> Node:
        if self.take("!"):
            return ("not", self.unary())
        if self.peek("-") and not self.peek("->"):
            self.pos += 1
            return ("neg", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek(".") and not self.peek(".."):
                self.pos += 1
                self.skip()
                match = _NUMBER.match(self.text, self.pos) or _IDENT.match(self.text, self.pos)
                if not match:
                    raise self.fail("expected an attribute")
                self.pos = match.end()
                key = match.group()
                node = ("index", node, ("lit", int(key) if key.isdigit() else key))
            elif self.peek("["):
                self.pos += 1
                if self.take("*"):
                    raise self.fail("splat expressions are not supported")
                index = self.expression()
                self.expect("]")
                node = ("index", node, index)
            else:
                return node

    def primary(self) -> Node:
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end")
        char = self.text[self.pos]
        if char == '"':
            return self.template()
        if char == "(":
            self.pos += 1
            node = self.expression()
            self.expect(")")
            return node
        if char == "[":
            self.pos += 1
            return self.sequence()
        if char == "{":
            self.pos += 1
            return self.mapping()
        number = _NUMBER.match(self.text, self.pos)
        if number:
            self.pos = number.end()
            return ("lit", float(number.group()) if "." in number.group() else int(number.group()))
        ident = _IDENT.match(self.text, self.pos)
        if not ident:
            raise self.fail("expected a value")
        self.pos = ident.end()
        name = ident.group()
        if name in ("true", "false", "null"):
            return ("lit", {"true": True, "false": False, "null": None}[name])
        if self.take("("):
            args: list[Node] = []
            while not self.take(")"):
                args.append(self.expression())
                self.take(",")
            return ("call", name, args)
        return ("ref", name)

    def template(self) -> Node:
        self.pos += 1  # the opening quote
        parts: list[Node] = []
        text: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                break
            if char == "\\":
                text.append(_ESCAPES.get(self.text[self.pos + 1], self.text[self.pos + 1]))
                self.pos += 2
            elif self.text.startswith("${", self.pos):
                if text:
                    parts.append(("lit", "".join(text)))
                    text = []
                self.pos += 2
                parts.append(self.expression())
                self.expect("}")
            else:
                text.append(char)
                self.pos += 1
        if text or not parts:
            parts.append(("lit", "".join(text)))
        return ("template", parts)

    def for_head(self) -> tuple[str | None, str, Node]:
        names = [self.identifier()]
        if self.take(","):
            names.append(self.identifier())
        self.skip()
        if not self.text.startswith("in", self.pos):
            raise self.fail("expected 'in'")
        self.pos += 2
        collection = self.expression()
        self.expect(":")
        return (names[0] if len(names) == 2 else None, names[-1], collection)

    def identifier(self) -> str:
        self.skip()
        match = _IDENT.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a name")
        self.pos = match.end()
        return match.group()

    def is_for(self) -> bool:
        self.skip()
        return re.match(r"for\s", self.text[self.pos :]) is not None

    def sequence(self) -> Node:
        if self.is_for():
            self.pos += 3
            key, value, collection = self.for_head()
            body = self.expression()
            condition = self.expression() if self.take_word("if") else None
            self.expect("]")
            return ("for_list", key, value, collection, body, condition)
        items: list[Node] = []
        while not self.take("]"):
            items.append(self.expression())
            self.take(",")
        return ("list", items)

    def take_word(self, word: str) -> bool:
        self.skip()
        if re.match(rf"{word}\b", self.text[self.pos :]):
            self.pos += len(word)
            return True
        return False

    def mapping(self) -> Node:
        if self.is_for():
            self.pos += 3
            key, value, collection = self.for_head()
            key_body = self.expression()
            self.expect("=>")
            value_body = self.expression()
            condition = self.expression() if self.take_word("if") else None
            self.expect("}")
            return ("for_map", key, value, collection, key_body, value_body, condition)
        entries: list[tuple[Node, Node]] = []
        while not self.take("}"):
            self.skip()
            ident = _IDENT.match(self.text, self.pos)
            if ident and not self.text.startswith('"', self.pos):
                self.pos = ident.end()
                key: Node = ("lit", ident.group())
            else:
                key = self.expression()
            if not (self.take("=") or self.take(":")):
                raise self.fail("expected = in an object")
            entries.append((key, self.expression()))
            self.take(",")
        return ("object", entries)


def parse(text: str) -> Node:
    return _Parser(text).whole()


# --- evaluation ----------------------------------------------------------------------------------------------------


def _regex(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise HclError(f"regex {pattern!r} does not match {text!r}")
    return match.group()


def _can(thunk: Callable[[], Any]) -> bool:
    try:
        thunk()
    except (HclError, KeyError, TypeError, ValueError):
        return False
    return True


def _set(items: Any) -> list[Any]:
    return sorted(set(items))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "merge": lambda *maps: {key: value for item in maps for key, value in item.items()},
    "concat": lambda *lists: [item for items in lists for item in items],
    "toset": _set,
    "tolist": list,
    "tomap": dict,
    "sort": sorted,
    "keys": lambda item: sorted(item),
    "values": lambda item: [item[key] for key in sorted(item)],
    "length": len,
    "contains": lambda items, value: value in items,
    "alltrue": lambda items: all(items),
    "anytrue": lambda items: any(items),
    "regex": _regex,
    "substr": lambda text, offset, length: text[offset : offset + length] if length >= 0 else text[offset:],
    "strcontains": lambda text, part: part in text,
    "startswith": lambda text, part: text.startswith(part),
    "join": lambda separator, items: separator.join(items),
    "base64encode": lambda text: base64.b64encode(text.encode()).decode(),
    "lower": str.lower,
    "upper": str.upper,
    "sha256": lambda text: hashlib.sha256(text.encode()).hexdigest(),
    "yamldecode": yaml.safe_load,
}


def _template(text: str, names: Mapping[str, Any]) -> str:
    """templatefile() for templates of `${name}` interpolations only: anything else it refuses, not misreads."""
    if "%{" in text or "$${" in text:
        raise HclError("templatefile: directives and escapes are not supported")

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            raise HclError(f"templatefile: no variable {match.group(1)!r} given")
        return _text(names[match.group(1)])

    filled = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", fill, text)
    if "${" in filled:
        raise HclError("templatefile: only ${name} interpolations are supported")
    return filled


@dataclass
class Scope:
    """Names visible to an expression besides the module's own: each.*, count.*, a dynamic block's iterator."""

    names: Mapping[str, Any]


class Module:
    """One Terraform module evaluated for `variables` (its defaults fill the rest)."""

    def __init__(
        self,
        directory: Path,
        variables: Mapping[str, Any],
        *,
        computed: Mapping[str, Callable[[Module, str, dict[str, Any]], dict[str, Any]]] = {},
        data: Mapping[str, Mapping[str, Any]] = {},
    ) -> None:
        self.directory = directory
        self.blocks = load(directory)
        self.declared = {name: body for name, _, body in labelled(self.blocks.get("variable", []))}
        unknown = set(variables) - set(self.declared)
        if unknown:
            raise HclError(f"not variables of {directory}: {sorted(unknown)}")
        self.variables: dict[str, Any] = {}
        for name, body in self.declared.items():
            if name in variables:
                self.variables[name] = variables[name]
            elif "default" in body:
                self.variables[name] = self.value(body["default"])
        self._locals: dict[str, Any] = {}
        for block in self.blocks.get("locals", []):
            self._locals.update({k: v for k, v in block.items() if not k.startswith("__")})
        self.resources = {(kind, name): body for kind, name, body in labelled(self.blocks.get("resource", []))}
        self.data_sources = {(kind, name): body for kind, name, body in labelled(self.blocks.get("data", []))}
        self._computed = computed
        self._data = data
        self._cache: dict[str, Any] = {}

    # values ----------------------------------------------------------------------------------------------------------

    def value(self, raw: Any, scope: Scope | None = None) -> Any:
        """A value as python-hcl2 returns it (text for expressions), evaluated."""
        if isinstance(raw, bool | int | float) or raw is None:
            return raw
        if isinstance(raw, list):
            return [self.value(item, scope) for item in raw]
        if isinstance(raw, dict):
            # Dynamic blocks name their iterator: blocks_of() expands them.
            return {
                unquote(k): self.value(v, scope) for k, v in raw.items() if not k.startswith("__") and k != "dynamic"
            }
        if isinstance(raw, str):
            if raw.startswith("${") and raw.endswith("}"):
                # python-hcl2 wraps a whole expression so; a template keeps its quotes instead.
                return self.evaluate(parse(raw[2:-1]), scope)
            if raw.startswith('"'):
                return self.evaluate(parse(raw), scope)
            return raw  # a bare word: a type name such as `string`
        raise HclError(f"unexpected value {raw!r}")

    def evaluate(self, node: Node, scope: Scope | None = None) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "template":
            parts = [self.evaluate(part, scope) for part in node[1]]
            return parts[0] if len(parts) == 1 and node[1][0][0] != "lit" else "".join(_text(p) for p in parts)
        if kind == "list":
            return [self.evaluate(item, scope) for item in node[1]]
        if kind == "object":
            return {_text(self.evaluate(k, scope)): self.evaluate(v, scope) for k, v in node[1]}
        if kind == "if":
            return self.evaluate(node[2] if self.evaluate(node[1], scope) else node[3], scope)
        if kind == "not":
            return not self.evaluate(node[1], scope)
        if kind == "neg":
            return -self.evaluate(node[1], scope)
        if kind == "op":
            return self._operator(node[1], node[2], node[3], scope)
        if kind == "call":
            return self._call(node[1], node[2], scope)
        if kind == "ref":
            return self._root(node[1], scope)
        if kind == "index":
            target = self.evaluate(node[1], scope)
            key = self.evaluate(node[2], scope)
            if isinstance(target, _Lazy):
                return target.get(key)
            return target[key]
        if kind in ("for_list", "for_map"):
            return self._for(node, scope)
        raise HclError(f"cannot evaluate {node!r}")

    def _operator(self, operator: str, left: Node, right: Node, scope: Scope | None) -> Any:
        a = self.evaluate(left, scope)
        if operator == "||":
            return a or self.evaluate(right, scope)
        if operator == "&&":
            return a and self.evaluate(right, scope)
        b = self.evaluate(right, scope)
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda x, y: x == y,
            "!=": lambda x, y: x != y,
            "<": lambda x, y: x < y,
            ">": lambda x, y: x > y,
            "<=": lambda x, y: x <= y,
            ">=": lambda x, y: x >= y,
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x / y,
            "%": lambda x, y: x % y,
        }
        return operations[operator](a, b)

    def _call(self, name: str, args: list[Node], scope: Scope | None) -> Any:
        if name == "can":
            return _can(lambda: self.evaluate(args[0], scope))
        if name == "fileset":
            folder, pattern = (self.evaluate(arg, scope) for arg in args)
            # Terraform's "**" matches files at any depth; pathlib's matches directories only.
            pattern = re.sub(r"\*\*$", "**/*", pattern)
            return sorted(str(p.relative_to(folder)) for p in Path(folder).glob(pattern) if p.is_file())
        if name == "filesha256":
            return hashlib.sha256(Path(self.evaluate(args[0], scope)).read_bytes()).hexdigest()
        if name == "file":
            return Path(self.evaluate(args[0], scope)).read_text()
        if name == "templatefile":
            path, names = (self.evaluate(arg, scope) for arg in args)
            return _template(Path(path).read_text(), names)
        if name not in FUNCTIONS:
            raise HclError(f"function {name}() is not supported")
        return FUNCTIONS[name](*(self.evaluate(arg, scope) for arg in args))

    def _for(self, node: Node, scope: Scope | None) -> Any:
        key_name, value_name, collection_node = node[1], node[2], node[3]
        collection = self.evaluate(collection_node, scope)
        pairs = collection.items() if isinstance(collection, dict) else enumerate(collection)
        results_list: list[Any] = []
        results_map: dict[str, Any] = {}
        for key, value in pairs:
            names = dict(scope.names) if scope else {}
            names[value_name] = value
            if key_name:
                names[key_name] = key
            inner = Scope(names)
            condition = node[-1]
            if condition is not None and not self.evaluate(condition, inner):
                continue
            if node[0] == "for_list":
                results_list.append(self.evaluate(node[4], inner))
            else:
                results_map[self.evaluate(node[4], inner)] = self.evaluate(node[5], inner)
        return results_list if node[0] == "for_list" else results_map

    def _root(self, name: str, scope: Scope | None) -> Any:
        if scope and name in scope.names:
            return scope.names[name]
        if name == "var":
            return _Lazy(lambda key: self.variables[key])
        if name == "local":
            return _Lazy(self.local)
        if name == "path":
            return {"module": str(self.directory), "root": str(self.directory)}
        if name == "data":
            return _Lazy(lambda kind: _Lazy(lambda label: self._data_source(kind, label)))
        if any(kind == name for kind, _ in self.resources):
            return _Lazy(lambda label: self.instance(name, label))
        raise HclError(f"unknown name {name!r}")

    def local(self, name: str) -> Any:
        key = f"local.{name}"
        if key not in self._cache:
            self._cache[key] = self.value(self._locals[name])
        return self._cache[key]

    def _data_source(self, kind: str, label: str) -> Any:
        if (kind, label) not in self.data_sources:
            raise HclError(f"no data.{kind}.{label}")
        return self._data[f"{kind}.{label}"]

    # resources -------------------------------------------------------------------------------------------------------

    def instance(self, kind: str, label: str, scope: Scope | None = None) -> Any:
        """A resource's attributes: what its block sets, evaluated on access, plus what the provider computes.

        A for_each resource named without a key is the map of its instances, as Terraform has it.
        """
        body = self.resources[(kind, label)]
        if "for_each" in body and scope is None:
            collection = self.value(body["for_each"])
            pairs = collection.items() if isinstance(collection, dict) else ((v, v) for v in collection)
            return {
                key: self.instance(kind, label, Scope({"each": {"key": key, "value": value}})) for key, value in pairs
            }

        def attribute(name: Any) -> Any:
            if isinstance(name, int):  # resource[0] of a counted resource: the instance itself
                return instance
            # What the provider computes wins: a function's `service_config[0].service` is not in its block.
            if kind in self._computed:
                computed = self._computed[kind](self, label, self.attributes(kind, label, scope))
                if name in computed:
                    return computed[name]
            if name in body:
                return self.value(body[name], scope)
            raise HclError(f"{kind}.{label} has no attribute {name}")

        instance = _Lazy(attribute)
        return instance

    def attributes(self, kind: str, label: str, scope: Scope | None = None) -> _Lazy:
        body = self.resources[(kind, label)]
        return _Lazy(lambda name: self.value(body[name], scope))

    def instances(self, kind: str) -> Iterator[tuple[str, _Lazy, dict[str, Any]]]:
        """(address, attributes, block body) of every instance of `kind`, with count and for_each expanded."""
        for address, attributes, body, _ in self.scoped_instances(kind):
            yield address, attributes, body

    def scoped_instances(self, kind: str) -> Iterator[tuple[str, _Lazy, dict[str, Any], Scope | None]]:
        """As `instances`, with the scope (count.*, each.*) that the instance's nested blocks are evaluated in."""
        for (each_kind, label), body in self.resources.items():
            if each_kind != kind:
                continue
            if "count" in body:
                for index in range(self.value(body["count"])):
                    scope = Scope({"count": {"index": index}})
                    yield f"{kind}.{label}[{index}]", self.instance(kind, label, scope), body, scope
            elif "for_each" in body:
                collection = self.value(body["for_each"])
                pairs = collection.items() if isinstance(collection, dict) else ((v, v) for v in collection)
                for key, value in pairs:
                    scope = Scope({"each": {"key": key, "value": value}})
                    yield f"{kind}.{label}[{key!r}]", self.instance(kind, label, scope), body, scope
            else:
                yield f"{kind}.{label}", self.instance(kind, label), body, None

    def blocks_of(self, body: dict[str, Any], name: str, scope: Scope | None = None) -> list[dict[str, Any]]:
        """Nested blocks called `name`, static and dynamic (expanded), with their attributes evaluated."""
        found = [self.value(block, scope) for block in body.get(name, [])]
        for dynamic in body.get("dynamic", []):
            for label, spec in dynamic.items():
                if unquote(label) != name:
                    continue
                collection = self.value(spec["for_each"], scope)
                pairs = collection.items() if isinstance(collection, dict) else enumerate(collection)
                for key, value in pairs:
                    names = dict(scope.names) if scope else {}
                    names[name] = {"key": key, "value": value}
                    found.extend(self.value(content, Scope(names)) for content in spec["content"])
        return found


class _Lazy:
    """An object whose attributes are computed on access (var, local, a resource, a data source)."""

    def __init__(self, get: Callable[[Any], Any]) -> None:
        self.get = get

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
