"""Rule conditions: simpleeval's expression language, checked once and compiled to closures.

Each expression is parsed with :mod:`ast` at load time, every node checked against
a whitelist (:class:`_Compiler`), then turned into a tree of Python closures
specialised by the shape of their operands: a condition costs one to a few hundred
nanoseconds. Sub-expressions that recur across a rule set (``lower(caller_name)`` in
200 rules) are computed once per call (:func:`shared_subexpressions`). Python's
``eval``/``compile`` are never used.
"""

from __future__ import annotations

import ast
import operator as op
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

MAX_EXPR_LEN = 500
MAX_NODES = 200
MAX_STRING = 1_000  # longest string or list a condition may build
MAX_POWER = 100  # largest exponent
MAX_POWER_BASE = 1_000_000
MAX_LITERAL_ITEMS = 100

Scope = Mapping[str, Any]
Evaluator = Callable[[Scope], Any]


class ExprError(Exception):
    """The expression is not acceptable (found at load time)."""

    def __init__(self, message: str, col: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


class EvalError(Exception):
    """The expression failed on this call's data (found at run time)."""


class _Missing:
    def __repr__(self) -> str:
        return "<not constant>"


MISSING: Any = _Missing()


# ------------------------------------------------------------ guarded operators
# simpleeval's safe_power / safe_mult / safe_add idea, with tighter limits: they keep a
# condition from allocating huge numbers or strings, at run time and when folding
# constants at load time.


def safe_power(a: Any, b: Any) -> Any:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if abs(b) > MAX_POWER or abs(a) > MAX_POWER_BASE:
            raise EvalError(f"number too large: {a!r} ** {b!r}")
    return a**b


def _too_long(n: int) -> EvalError:
    return EvalError(f"result too long ({n} > {MAX_STRING})")


def safe_mult(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, str | list | tuple) and isinstance(n, int) and n * len(seq) > MAX_STRING:
            raise _too_long(n * len(seq))
    return a * b


def safe_add(a: Any, b: Any) -> Any:
    if isinstance(a, str | list | tuple) and isinstance(b, str | list | tuple):
        if len(a) + len(b) > MAX_STRING:
            raise _too_long(len(a) + len(b))
    return a + b


def _contains(container: Any, item: Any) -> bool:
    if container is None:
        return False
    return bool(item in container)


BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: safe_add,
    ast.Sub: op.sub,
    ast.Mult: safe_mult,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,
    ast.Pow: safe_power,
}
UNARYOPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: op.not_,
    ast.USub: op.neg,
    ast.UAdd: op.pos,
}
CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: lambda x, y: _contains(y, x),
    ast.NotIn: lambda x, y: not _contains(y, x),
    ast.Is: op.is_,
    ast.IsNot: op.is_not,
}

# read-only attributes allowed on date/time values (``now.hour``)
_DATETIME_ATTRS = frozenset({"year", "month", "day", "hour", "minute", "second"})


def get_attr(value: Any, name: str) -> Any:
    """``record.key``: a key of a mapping, a date/time field, or ``None`` on ``None``."""
    if value is None:
        return None
    if type(value) is dict or isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, datetime | date) and name in _DATETIME_ATTRS:
        return getattr(value, name)
    raise EvalError(f"'.{name}' can only be read from a record, not from {type(value).__name__}")


def get_item(value: Any, key: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, str | list | tuple) and isinstance(key, int | slice):
        try:
            return value[key]
        except IndexError:
            return None
    raise EvalError(f"cannot index {type(value).__name__} with {type(key).__name__}")


# ------------------------------------------------------------ compile environment


@dataclass(frozen=True)
class Function:
    """A function the rules may call.

    ``build(args, consts)`` receives the compiled argument evaluators and,
    for each argument, its value if it is a constant (else :data:`MISSING`).
    It validates constants (raising :class:`ExprError`), specialises (e.g.
    pre-compiles a wildcard pattern) and returns the evaluator of the call.
    """

    name: str
    min_args: int
    max_args: int
    build: Callable[[Sequence[Evaluator], Sequence[Any]], Evaluator]
    doc: str = ""
    # optional fast builder when the first argument is a text name: (name, consts) -> evaluator
    build_on_text_name: Callable[[str, Sequence[Any]], Evaluator | None] | None = None
    # the type of every value the function returns, when it is always the same (len: int)
    returns: type | None = None


@dataclass(frozen=True)
class Env:
    """What an expression may refer to."""

    names: frozenset[str]
    functions: Mapping[str, Function]
    # names whose value may be absent (IVR answers): read as '' when missing
    soft_names: frozenset[str] = frozenset()
    # names holding phone numbers: string constants compared with them are normalised
    number_names: frozenset[str] = frozenset()
    # names whose value is always a str (allows faster code for calls on them)
    text_names: frozenset[str] = frozenset()
    # names whose value is always an int (``hour``): arithmetic on them needs no length guard
    int_names: frozenset[str] = frozenset()
    # sub-expressions computed once per call (:func:`shared_subexpressions`)
    shared: frozenset[str] = frozenset()
    normalize: Callable[[str], str] = staticmethod(lambda s: s)


def per_call(key: str, compute: Evaluator) -> Evaluator:
    """Compute once per call: for what depends only on the call (``open('x')``, and the
    sub-expressions :func:`shared_subexpressions` finds in several conditions).

    The result is kept in the call's scope under ``key`` (not an identifier,
    so no expression can read it); scopes that are not dicts are not cached.
    An error is not kept: the next use computes again, and fails again the same way.
    The key is interned: the closures of 200 rules then look up one object, found by
    identity, instead of 200 equal texts compared character by character.
    """
    key = sys.intern(key)

    def cached(s: Mapping[str, Any]) -> Any:
        try:
            return s[key]
        except KeyError:
            value = compute(s)
            if type(s) is dict:
                s[key] = value
            return value

    return cached


# the kinds of value a memo may hold: equal values of these types cannot be told apart
# except with ``is`` (conditions using ``is`` get no memo); a float could be NaN
_MEMO_KINDS = (str, int, bool)


def _memoisable(node: ast.AST, records: frozenset[str] = frozenset()) -> bool:
    """A call or an arithmetic operation whose value depends only on the call's names.

    Not ``lookup()`` (it asks the database), not ``open()`` / ``holiday()`` (already
    computed once per call) and nothing that reads a record (``customer.tier``,
    ``answers['x']``, or the names in ``records``): a record is the adapter's object,
    read as often as before.
    """
    if not isinstance(node, ast.Call | ast.BinOp):
        return False
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute | ast.Subscript | ast.Starred | ast.keyword):
            return False
        if isinstance(sub, ast.Name) and sub.id in records:
            return False
        if isinstance(sub, ast.Call) and not (
            isinstance(sub.func, ast.Name) and sub.func.id not in ("lookup", "open", "holiday")
        ):
            return False
    return True


def memo_key(node: ast.expr, source: str) -> str:
    """A call or operation by its text: the same text is the same computation (only
    constant operands are ever rewritten, and the same way everywhere)."""
    if source.isascii():  # offsets count UTF-8 bytes
        text = source[node.col_offset : node.end_col_offset]
    else:
        text = ast.get_source_segment(source, node) or ast.dump(node)
    return "\x00=" + text


def shared_subexpressions(
    sources: Iterable[object], records: frozenset[str] = frozenset()
) -> frozenset[str]:
    """The memoisable calls and operations (:func:`_memoisable`, ``records``: the names
    holding the adapter's records) that occur more than once in these conditions, by
    :func:`memo_key`. Compiled with them in ``Env.shared``, each is computed once per
    call instead of once per condition (``lower(caller_name)`` in 200 rules), if its
    value is a str, an int or a bool. Text that does not parse is skipped:
    :func:`compile_expr` will report it."""
    counts: Counter[str] = Counter()
    examples: dict[str, ast.expr] = {}
    for source in sources:
        if not isinstance(source, str) or len(text := source.strip()) > MAX_EXPR_LEN:
            continue
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call | ast.BinOp):
                key = memo_key(node, text)
                counts[key] += 1
                examples.setdefault(key, node)
    return frozenset(
        key for key, n in counts.items() if n > 1 and _memoisable(examples[key], records)
    )


@dataclass(frozen=True)
class Compiled:
    source: str
    tree: ast.expr
    fn: Evaluator
    constant: bool
    value: Any  # the value when constant, else MISSING
    names: frozenset[str]

    def __call__(self, scope: Scope) -> Any:
        return self.fn(scope)


def compile_expr(source: str, env: Env) -> Compiled:
    """Parse, check and compile one expression. Raises :class:`ExprError`."""
    if not isinstance(source, str):
        raise ExprError(f"a condition must be text, not {type(source).__name__}")
    text = source.strip()
    if not text:
        raise ExprError("empty condition")
    if len(text) > MAX_EXPR_LEN:
        raise ExprError(f"condition too long ({len(text)} characters, at most {MAX_EXPR_LEN})")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", exc.offset) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExprError(f"condition too complex ({len(nodes)} parts, at most {MAX_NODES})")
    # ``a is b`` tells a value computed once per call from the same value computed twice
    memo = bool(env.shared) and not any(isinstance(n, ast.Is | ast.IsNot) for n in nodes)
    compiler = _Compiler(env, text if memo else None)
    fn, value = compiler.compile(tree.body)
    return Compiled(text, tree.body, fn, value is not MISSING, value, frozenset(compiler.used))


# ------------------------------------------------------------ specialised closures
# The compiler knows, for each sub-expression, whether it is a constant, a read of a
# name (``s[key]``) or something else (a closure); the closures below read names and
# constants inline instead of calling one closure per operand. Each computes exactly
# what ``f(left(s), right(s))`` computes, evaluating the left operand first.

_NUMERIC = (int, float, bool)  # kinds of values that are never texts or lists
_INT_CLOSED = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)  # int op int -> int


@dataclass(frozen=True, slots=True)
class _Part:
    """One compiled sub-expression and what is known about it at load time."""

    fn: Evaluator
    value: Any = MISSING  # its value when constant
    key: str | None = None  # set when it reads a name: ``fn`` is ``lambda s: s[key]``
    kind: type | None = None  # the type of its value, when always the same
    memo: str | None = None  # set when computed once per call: ``fn`` is ``per_call(memo, …)``
    compute: Evaluator | None = None  # then: the computation itself


def _constant(value: Any) -> Evaluator:
    return lambda s: value


def _binary(f: Callable[[Any, Any], Any], a: _Part, b: _Part) -> Evaluator:
    """``f(a, b)`` with names and constants read inline."""
    if a.key is not None:
        ka = a.key
        if b.value is not MISSING:
            vb = b.value
            return lambda s: f(s[ka], vb)
        if b.key is not None:
            kb = b.key
            return lambda s: f(s[ka], s[kb])
        fb = b.fn
        return lambda s: f(s[ka], fb(s))
    if a.value is not MISSING:
        va = a.value
        if b.key is not None:
            kb = b.key
            return lambda s: f(va, s[kb])
        fb = b.fn
        return lambda s: f(va, fb(s))
    fa = a.fn
    if b.value is not MISSING:
        vb = b.value
        return lambda s: f(fa(s), vb)
    if b.key is not None:
        kb = b.key
        return lambda s: f(fa(s), s[kb])
    fb = b.fn
    return lambda s: f(fa(s), fb(s))


# ``name <op> constant`` and ``<expression> <op> constant``, the operator inline
# (``a == b`` is what ``operator.eq(a, b)`` does, without the call)
_CMP_NAME_CONST: dict[type[ast.cmpop], Callable[[str, Any], Evaluator]] = {
    ast.Eq: lambda k, c: lambda s: s[k] == c,
    ast.NotEq: lambda k, c: lambda s: s[k] != c,
    ast.Lt: lambda k, c: lambda s: s[k] < c,
    ast.LtE: lambda k, c: lambda s: s[k] <= c,
    ast.Gt: lambda k, c: lambda s: s[k] > c,
    ast.GtE: lambda k, c: lambda s: s[k] >= c,
}
_CMP_FN_CONST: dict[type[ast.cmpop], Callable[[Evaluator, Any], Evaluator]] = {
    ast.Eq: lambda f, c: lambda s: f(s) == c,
    ast.NotEq: lambda f, c: lambda s: f(s) != c,
    ast.Lt: lambda f, c: lambda s: f(s) < c,
    ast.LtE: lambda f, c: lambda s: f(s) <= c,
    ast.Gt: lambda f, c: lambda s: f(s) > c,
    ast.GtE: lambda f, c: lambda s: f(s) >= c,
}
# ``x in [...]``: ``_contains`` is ``item in container`` when the container is not None
_IN_NAME_CONST: dict[type[ast.cmpop], Callable[[str, Any], Evaluator]] = {
    ast.In: lambda k, c: lambda s: s[k] in c,
    ast.NotIn: lambda k, c: lambda s: s[k] not in c,
}
_IN_FN_CONST: dict[type[ast.cmpop], Callable[[Evaluator, Any], Evaluator]] = {
    ast.In: lambda f, c: lambda s: f(s) in c,
    ast.NotIn: lambda f, c: lambda s: f(s) not in c,
}


def _memo_compare(key: str, compute: Evaluator, f: Callable[[Any, Any], Any], c: Any) -> Evaluator:
    """``f(per_call(key, compute)(s), c)`` in one closure."""
    key = sys.intern(key)

    def compare(s: Scope) -> Any:
        try:
            value = s[key]
        except KeyError:
            value = compute(s)
            if type(s) is dict:
                s[key] = value
        return f(value, c)

    return compare


def _compare(cmp: type[ast.cmpop], f: Callable[[Any, Any], Any], a: _Part, b: _Part) -> Evaluator:
    """One comparison ``a <cmp> b``, specialised when ``b`` is a constant."""
    if b.value is not MISSING:
        c = b.value
        if a.memo is not None and a.compute is not None and cmp in _CMP_NAME_CONST:
            return _memo_compare(a.memo, a.compute, f, c)
        if a.key is not None:
            by_name = _CMP_NAME_CONST.get(cmp)
            if by_name is None and c is not None:
                by_name = _IN_NAME_CONST.get(cmp)
            if by_name is not None:
                return by_name(a.key, c)
        else:
            by_fn = _CMP_FN_CONST.get(cmp)
            if by_fn is None and c is not None:
                by_fn = _IN_FN_CONST.get(cmp)
            if by_fn is not None:
                return by_fn(a.fn, c)
    return _binary(f, a, b)


class _Compiler:
    """Checks an expression tree against the whitelist and turns it into closures.

    The grammar is simpleeval's (``SimpleEval``): names, constants, ``and`` / ``or``
    / ``not``, comparisons (``==``, ``<``, ``in`` …), arithmetic, ``x if c else y``,
    subscripts and calls of whitelisted functions; one ``_<NodeType>`` method each.
    Evaluating the closures replaces simpleeval's tree walk (a 1,000-rule set must
    decide in well under a millisecond, even when no rule can be skipped).

    What is refused, at load time, with the column of the mistake:

    * anything not in the whitelist: lambda, comprehensions, f-strings, dict/set
      literals, keyword or starred arguments, walrus, ``import`` …;
    * unknown names and functions; attribute names starting with ``_``;
    * expressions longer than :data:`MAX_EXPR_LEN` characters or with more than
      :data:`MAX_NODES` nodes (checked by :func:`compile_expr`);
    * constant sub-expressions that break a limit (``9**9**9``, ``'a'*10**9``):
      they are folded at load time with the same guarded operators.

    Attribute access reads keys of records (``customer.tier``, :func:`get_attr`)
    and never touches Python attributes; ``None.x`` is ``None`` so
    ``customer.tier == 'gold'`` is simply false for unknown callers.

    Speed (the semantics are those of the plain ``f(left(s), right(s))`` closures):
    names and constants are read inline by their parent (:func:`_binary`), ``==``,
    ``<``, ``in`` … against a constant are written inline (:func:`_compare`), and
    ``+`` / ``*`` skip the length guard of :func:`safe_add` / :func:`safe_mult` when
    an operand is known to be a number (``hour * 100 + minute``), since the guard can
    only fire on texts and lists.
    """

    def __init__(self, env: Env, source: str | None = None) -> None:
        self.env = env
        self.used: set[str] = set()
        # the text compiled, if its sub-expressions in ``env.shared`` are computed once
        # per call (see :meth:`part`)
        self.source = source if env.shared else None

    def fail(self, node: ast.AST, message: str) -> ExprError:
        return ExprError(message, getattr(node, "col_offset", -1) + 1)

    def compile(self, node: ast.expr) -> tuple[Evaluator, Any]:
        """Return (evaluator, constant value or MISSING); folds constants."""
        part = self.part(node)
        return part.fn, part.value

    def part(self, node: ast.expr) -> _Part:
        """Compile one node, folding constants; see :class:`_Part`."""
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, f"{_describe(node)} is not allowed in a rule condition")
        fn, is_const, kind = method(node)
        if is_const:
            try:
                value = fn({})
            except EvalError as exc:
                raise self.fail(node, str(exc)) from None
            except Exception as exc:  # e.g. 1/0, 'a' < 1 in a constant expression
                raise self.fail(node, f"{type(exc).__name__}: {exc}") from None
            return _Part(_constant(value), value, None, type(value))
        if isinstance(node, ast.Name) and node.id in self.env.names:
            return _Part(fn, MISSING, node.id, kind)
        if self.source and kind in _MEMO_KINDS and isinstance(node, ast.Call | ast.BinOp):
            key = memo_key(node, self.source)
            if key in self.env.shared:
                return _Part(per_call(key, fn), MISSING, None, kind, key, fn)
        return _Part(fn, MISSING, None, kind)

    # each handler returns (evaluator, all-children-constant, kind of the value or None)

    def _Constant(self, node: ast.Constant) -> tuple[Evaluator, bool, type | None]:
        value = node.value
        if not isinstance(value, str | int | float | bool | type(None)):
            raise self.fail(node, f"{type(value).__name__} literals are not allowed")
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise self.fail(node, f"text literal too long ({len(value)} > {MAX_STRING})")
        return (lambda s: value), True, type(value)

    def _Name(self, node: ast.Name) -> tuple[Evaluator, bool, type | None]:
        name = node.id
        if name in self.env.names:
            self.used.add(name)
            return (lambda s: s[name]), False, int if name in self.env.int_names else None
        if name in self.env.soft_names:
            self.used.add(name)
            return (lambda s: s.get(name, "")), False, None
        if name in self.env.functions:
            raise self.fail(node, f"{name} is a function: call it as {name}(...)")
        known = ", ".join(sorted(self.env.names | self.env.soft_names))
        raise self.fail(node, f"unknown name '{name}' (known names: {known})")

    def _seq(self, node: ast.List | ast.Tuple) -> tuple[Evaluator, bool, type | None]:
        if len(node.elts) > MAX_LITERAL_ITEMS:
            raise self.fail(node, f"list too long (at most {MAX_LITERAL_ITEMS} items)")
        parts = [self.part(e) for e in node.elts]
        fns = [p.fn for p in parts]
        const = all(p.value is not MISSING for p in parts)
        return (lambda s: tuple(f(s) for f in fns)), const, tuple

    _List = _seq
    _Tuple = _seq

    def _BoolOp(self, node: ast.BoolOp) -> tuple[Evaluator, bool, type | None]:
        parts = [self.part(v) for v in node.values]
        fns = [p.fn for p in parts]
        const = all(p.value is not MISSING for p in parts)
        if len(fns) == 2:
            a, b = fns
            if isinstance(node.op, ast.And):
                return (lambda s: a(s) and b(s)), const, None
            return (lambda s: a(s) or b(s)), const, None
        if isinstance(node.op, ast.And):

            def and_(s: Scope) -> Any:
                result: Any = True
                for f in fns:
                    result = f(s)
                    if not result:
                        return result
                return result

            return and_, const, None

        def or_(s: Scope) -> Any:
            result: Any = False
            for f in fns:
                result = f(s)
                if result:
                    return result
            return result

        return or_, const, None

    def _UnaryOp(self, node: ast.UnaryOp) -> tuple[Evaluator, bool, type | None]:
        fn = UNARYOPS.get(type(node.op))
        if fn is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        part = self.part(node.operand)
        const = part.value is not MISSING
        inner = part.fn
        if isinstance(node.op, ast.Not):
            return (lambda s: not inner(s)), const, bool
        kind = int if part.kind in (int, bool) else None  # -True is -1
        if part.key is not None:
            key = part.key
            return (lambda s: fn(s[key])), const, kind
        return (lambda s: fn(inner(s))), const, kind

    def _BinOp(self, node: ast.BinOp) -> tuple[Evaluator, bool, type | None]:
        fn = BINOPS.get(type(node.op))
        if fn is None:
            raise self.fail(node, f"operator {type(node.op).__name__} is not allowed")
        a, b = self.part(node.left), self.part(node.right)
        # the guards only refuse texts and lists: needless when an operand is a number
        if fn is safe_add and (a.kind in _NUMERIC or b.kind in _NUMERIC):
            fn = op.add
        elif fn is safe_mult and a.kind in _NUMERIC and b.kind in _NUMERIC:
            fn = op.mul
        const = a.value is not MISSING and b.value is not MISSING
        kind = int if a.kind is int and b.kind is int and isinstance(node.op, _INT_CLOSED) else None
        return _binary(fn, a, b), const, kind

    def _number_const(self, node: ast.expr) -> ast.expr:
        """Normalise string constants compared with a phone-number name."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return ast.copy_location(ast.Constant(self.env.normalize(node.value)), node)
        if isinstance(node, ast.List | ast.Tuple):
            elts = [self._number_const(e) for e in node.elts]
            return ast.copy_location(type(node)(elts=elts, ctx=ast.Load()), node)
        return node

    def _Compare(self, node: ast.Compare) -> tuple[Evaluator, bool, type | None]:
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Name) and o.id in self.env.number_names for o in operands):
            operands = [self._number_const(o) for o in operands]
        parts = [self.part(o) for o in operands]
        fns = [p.fn for p in parts]
        ops = []
        for o in node.ops:
            fn = CMPOPS.get(type(o))
            if fn is None:
                raise self.fail(node, f"comparison {type(o).__name__} is not allowed")
            ops.append(fn)
        const = all(p.value is not MISSING for p in parts)
        if len(ops) == 1:
            if const:  # folded by part(): the plain form is enough
                left, right = fns
                cmp = ops[0]
                return (lambda s: cmp(left(s), right(s))), True, None
            return _compare(type(node.ops[0]), ops[0], parts[0], parts[1]), False, None

        def chain(s: Scope) -> bool:
            lhs = fns[0](s)
            for cmp, f in zip(ops, fns[1:], strict=True):
                rhs = f(s)
                if not cmp(lhs, rhs):
                    return False
                lhs = rhs
            return True

        return chain, const, bool

    def _IfExp(self, node: ast.IfExp) -> tuple[Evaluator, bool, type | None]:
        test, body, orelse = (self.part(n) for n in (node.test, node.body, node.orelse))
        const = MISSING not in (test.value, body.value, orelse.value)
        t, b, o = test.fn, body.fn, orelse.fn
        kind = body.kind if body.kind is orelse.kind else None
        return (lambda s: b(s) if t(s) else o(s)), const, kind

    def _Attribute(self, node: ast.Attribute) -> tuple[Evaluator, bool, type | None]:
        attr = node.attr
        if attr.startswith("_"):
            raise self.fail(node, f"'.{attr}': names starting with '_' are not allowed")
        if isinstance(node.value, ast.Name) and node.value.id in self.env.names:
            self.used.add(node.value.id)
            key = node.value.id
            return (lambda s: get_attr(s[key], attr)), False, None
        inner, value = self.compile(node.value)
        return (lambda s: get_attr(inner(s), attr)), value is not MISSING, None

    def _Subscript(self, node: ast.Subscript) -> tuple[Evaluator, bool, type | None]:
        inner, value = self.compile(node.value)
        if isinstance(node.slice, ast.Slice):
            bounds = [
                self.compile(b) if b is not None else ((lambda s: None), None)
                for b in (node.slice.lower, node.slice.upper, node.slice.step)
            ]
            lo, hi, st = (b[0] for b in bounds)
            const = value is not MISSING and all(b[1] is not MISSING for b in bounds)
            return (lambda s: get_item(inner(s), slice(lo(s), hi(s), st(s)))), const, None
        key, kv = self.compile(node.slice)
        const = value is not MISSING and kv is not MISSING
        return (lambda s: get_item(inner(s), key(s))), const, None

    def _Call(self, node: ast.Call) -> tuple[Evaluator, bool, type | None]:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only the documented functions can be called, e.g. open('x')")
        name = node.func.id
        spec = self.env.functions.get(name)
        if spec is None:
            known = ", ".join(sorted(self.env.functions))
            raise self.fail(node, f"unknown function '{name}' (known functions: {known})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{name}(): only plain positional arguments are allowed")
        if not spec.min_args <= len(node.args) <= spec.max_args:
            want = (
                str(spec.min_args)
                if spec.min_args == spec.max_args
                else f"{spec.min_args} to {spec.max_args}"
            )
            raise self.fail(node, f"{name}() takes {want} arguments, got {len(node.args)}")
        args = list(node.args)
        if name in ("matches", "startswith", "endswith") and args:
            first = args[0]
            if isinstance(first, ast.Name) and first.id in self.env.number_names:
                args[1:] = [_pattern_const(a) for a in args[1:]]
        parts = [self.compile(a) for a in args]
        self.used.add(name + "()")
        consts = [p[1] for p in parts]
        head = args[0] if args else None
        if (
            spec.build_on_text_name is not None
            and isinstance(head, ast.Name)
            and head.id in self.env.text_names
        ):
            try:
                fast = spec.build_on_text_name(head.id, consts)
            except ExprError as exc:
                raise self.fail(node, f"{name}(): {exc.message}") from None
            if fast is not None:
                return fast, False, spec.returns
        try:
            fn = spec.build([p[0] for p in parts], consts)
        except ExprError as exc:
            raise self.fail(node, f"{name}(): {exc.message}") from None
        # calls are never folded: they may depend on the call (time, lookups)
        return fn, False, spec.returns


def _pattern_const(node: ast.expr) -> ast.expr:
    """``'0034…'`` in a number pattern means ``'+34…'``."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("00")
    ):
        return ast.copy_location(ast.Constant("+" + node.value[2:]), node)
    return node


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "lambda",
        "ListComp": "a list comprehension",
        "SetComp": "a set comprehension",
        "DictComp": "a dict comprehension",
        "GeneratorExp": "a generator expression",
        "JoinedStr": "an f-string",
        "Dict": "a dict literal",
        "Set": "a set literal",
        "NamedExpr": "':='",
        "Await": "await",
        "Yield": "yield",
        "Starred": "'*'",
    }
    return names.get(type(node).__name__, type(node).__name__)
