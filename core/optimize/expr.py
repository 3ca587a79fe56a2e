"""A small, safe expression language for a space's ``when`` conditions and ``constraints``.

Why not ``eval``: a space file is data a user may download or share, and a condition must never
run code. This is a tokenizer and a recursive-descent parser that builds a tree of plain nodes;
evaluating walks the tree over a mapping of variable values. Nothing else is reachable.

Grammar, loosest first::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/" | "%") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | "none" | NAME | "(" expr ")"
             | "[" (expr ("," expr)*)? "]"

``NAME`` is a dotted config path (``strategy.fan_in``). A name with no value (a conditional
variable that is inactive) is ``none``; comparing ``none`` with ``<`` or doing arithmetic on it
gives ``none``, which is false, so ``strategy.fan_in >= 4`` is simply false when ``fan_in`` is
not in play instead of an error in the middle of a search.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ponder.errors import ConfigError


class ExprError(ConfigError):
    """A condition or constraint that does not parse; the message says where."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "none"}


@attrs.frozen
class Token:
    kind: str  # number, string, name, op, keyword, end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExprError(f"unexpected character {text[pos]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            value = match.group()
            if kind == "name" and value.lower() in _KEYWORDS:
                kind, value = "keyword", value.lower()
            tokens.append(Token(kind, value, pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --- the tree -------------------------------------------------------------------------------
@attrs.frozen
class Literal:
    value: Any

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        return self.value


@attrs.frozen
class Name:
    name: str

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        return env.get(self.name)


@attrs.frozen
class ListOf:
    items: tuple[Any, ...]

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        return [item.evaluate(env) for item in self.items]


@attrs.frozen
class Unary:
    op: str
    operand: Any

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        value = self.operand.evaluate(env)
        if self.op == "not":
            return not _truth(value)
        if not _number(value):
            return None
        return -value


def _truth(value: Any) -> bool:
    return bool(value) if value is not None else False


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _divide(a: Any, b: Any) -> Any:
    return None if b == 0 else a / b


def _modulo(a: Any, b: Any) -> Any:
    return None if b == 0 else a % b


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide, "%": _modulo,
}
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@attrs.frozen
class Binary:
    op: str
    left: Any
    right: Any

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        if self.op == "and":
            return _truth(self.left.evaluate(env)) and _truth(self.right.evaluate(env))
        if self.op == "or":
            return _truth(self.left.evaluate(env)) or _truth(self.right.evaluate(env))
        a, b = self.left.evaluate(env), self.right.evaluate(env)
        if self.op == "==":
            return a == b
        if self.op == "!=":
            return a != b
        if self.op in ("in", "not in"):
            if not isinstance(b, list | str) or (isinstance(b, str) and not isinstance(a, str)):
                return None
            return (a in b) == (self.op == "in")
        if self.op in _ORDER:
            comparable = (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))
            return _ORDER[self.op](a, b) if comparable else None
        if self.op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_number(a) and _number(b)):
            return None
        return _ARITHMETIC[self.op](a, b)


def names_in(node: Any) -> set[str]:
    """Every variable name an expression reads."""
    if isinstance(node, Name):
        return {node.name}
    if isinstance(node, Unary):
        return names_in(node.operand)
    if isinstance(node, Binary):
        return names_in(node.left) | names_in(node.right)
    if isinstance(node, ListOf):
        return set().union(*(names_in(item) for item in node.items)) if node.items else set()
    return set()


# --- the parser -----------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, *texts: str) -> Token | None:
        token = self.current
        if token.kind == kind and (not texts or token.text in texts):
            return self.advance()
        return None

    def expect(self, kind: str, text: str) -> None:
        if self.accept(kind, text) is None:
            self.fail(f"expected {text!r}")

    def fail(self, message: str) -> None:
        token = self.current
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExprError(f"{message} at column {token.pos + 1}, found {found}")

    def parse(self) -> Any:
        node = self.parse_or()
        if self.current.kind != "end":
            self.fail("unexpected token")
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.accept("keyword", "or"):
            node = Binary("or", node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_not()
        while self.accept("keyword", "and"):
            node = Binary("and", node, self.parse_not())
        return node

    def parse_not(self) -> Any:
        if self.accept("keyword", "not"):
            return Unary("not", self.parse_not())
        return self.parse_compare()

    def parse_compare(self) -> Any:
        node = self.parse_sum()
        token = self.current
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            self.advance()
            return Binary(token.text, node, self.parse_sum())
        if self.accept("keyword", "in"):
            return Binary("in", node, self.parse_sum())
        if token.kind == "keyword" and token.text == "not" \
                and self.tokens[self.index + 1].text == "in":
            self.index += 2
            return Binary("not in", node, self.parse_sum())
        return node

    def parse_sum(self) -> Any:
        node = self.parse_product()
        while (token := self.accept("op", "+", "-")) is not None:
            node = Binary(token.text, node, self.parse_product())
        return node

    def parse_product(self) -> Any:
        node = self.parse_unary()
        while (token := self.accept("op", "*", "/", "%")) is not None:
            node = Binary(token.text, node, self.parse_unary())
        return node

    def parse_unary(self) -> Any:
        if self.accept("op", "-"):
            return Unary("-", self.parse_unary())
        return self.parse_atom()

    def parse_atom(self) -> Any:
        token = self.current
        if token.kind == "number":
            self.advance()
            text = token.text
            is_float = any(c in text for c in ".eE")
            return Literal(float(text) if is_float else int(text))
        if token.kind == "string":
            self.advance()
            return Literal(re.sub(r"\\(.)", r"\1", token.text[1:-1]))
        if token.kind == "keyword" and token.text in ("true", "false", "none"):
            self.advance()
            return Literal({"true": True, "false": False, "none": None}[token.text])
        if token.kind == "name":
            self.advance()
            return Name(token.text)
        if self.accept("op", "("):
            node = self.parse_or()
            self.expect("op", ")")
            return node
        if self.accept("op", "["):
            items: list[Any] = []
            if not self.accept("op", "]"):
                items.append(self.parse_or())
                while self.accept("op", ","):
                    items.append(self.parse_or())
                self.expect("op", "]")
            return ListOf(tuple(items))
        self.fail("expected a value, a name or '('")
        raise AssertionError  # unreachable: fail raises


@attrs.frozen
class Expression:
    """A parsed condition: ``names`` it reads and ``holds(env)`` / ``value(env)``."""

    text: str
    tree: Any
    names: frozenset[str]

    def value(self, env: Mapping[str, Any]) -> Any:
        return self.tree.evaluate(env)

    def holds(self, env: Mapping[str, Any]) -> bool:
        return _truth(self.value(env))


def parse(text: str) -> Expression:
    """Parse ``text``; raises :class:`ExprError` naming the column of the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("an expression must be a non-empty string")
    tree = _Parser(text).parse()
    return Expression(text, tree, frozenset(names_in(tree)))
