"""The Jinja2 sandbox templates render in, with a budget: a render may take so many steps (loop
iterations, calls, filters), build values and output of so many characters, and run so long.

Jinja's own sandbox stops a template from reaching Python internals, not from working forever:
two nested `range(100000)` loops rendered for ~15 minutes and `'x' * 50000000` built 50 MB. Here
every `{% for %}` iterates through a counter (the template's syntax tree is rewritten before
compiling), every call, filter and intercepted operator counts one step and checks the deadline,
operations that multiply a size (`*`, `%` widths, padding, `replace`, `join`, `wordwrap`) are
refused *before* they allocate beyond the limit, and any other value built is checked after.
Constant folding at compile time is off, so nothing runs outside a budget.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from functools import wraps
from typing import Any, cast

from jinja2 import ChainableUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_STEPS = 100_000  # loop iterations + calls + filters per render
MAX_CHARS = 2_000_000  # of any value built, and of a rendered part (Gmail clips at ~100 KB)
DEADLINE_SECONDS = 2.0  # per render, wall clock

# A %-format or str.format width or precision of 7+ digits asks for megabytes of padding.
_HUGE_WIDTH = re.compile(r"[%:][^a-zA-Z%{}]*?\d{7,}")


class BudgetExceeded(ValueError):
    """The template asked for more work than one message may take."""


class Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + DEADLINE_SECONDS

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise BudgetExceeded(f"more than {MAX_STEPS} loop iterations and calls")
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"rendering took longer than {DEADLINE_SECONDS:g} s")


_current: ContextVar[Budget | None] = ContextVar("drip_template_budget", default=None)


def _budget() -> Budget:
    # Outside `budgeted()` (not done by this package): each operation gets a budget of its own.
    return _current.get() or Budget()


@contextlib.contextmanager
def budgeted() -> Iterator[Budget]:
    """One budget for everything rendered inside (a message's subject, HTML and text)."""
    token = _current.set(Budget())
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def checked(value: Any) -> Any:
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_CHARS:
        raise BudgetExceeded(f"a value of more than {MAX_CHARS} characters")
    return value


def _refuse_above(size: int) -> None:
    if size > MAX_CHARS:
        raise BudgetExceeded(f"a value of more than {MAX_CHARS} characters")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, Sized) else len(str(value))


def _check_format(spec: Any, args: Any = ()) -> None:
    if not isinstance(spec, str):
        return
    star_widths = args if isinstance(args, tuple) else (args,)
    if _HUGE_WIDTH.search(spec) or (
        "*" in spec and any(isinstance(a, int) and a > MAX_CHARS for a in star_widths)
    ):
        raise BudgetExceeded(f"a format width beyond {MAX_CHARS} characters")


def _precheck(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse, before it runs, an operation whose result would outgrow the limit."""
    params = [*args, *kwargs.values()]
    if name in ("center", "ljust", "rjust", "zfill", "indent"):
        width = params[0] if params else 0
        lines = str(value).count("\n") + 1 if name == "indent" else 1
        _refuse_above(_length(value) + lines * (width if isinstance(width, int) else len(width)))
    elif name == "replace" and len(params) >= 2:
        old, new = str(params[0]), str(params[1])
        count = _length(value) // max(len(old), 1) + 1
        _refuse_above(_length(value) + count * len(new))
    elif name == "wordwrap":
        wrapstring = kwargs.get("wrapstring") or (params[3] if len(params) > 3 else None) or "\n"
        _refuse_above(_length(value) * (1 + len(str(wrapstring))))
    elif name == "expandtabs":
        size = params[0] if params and isinstance(params[0], int) else 8
        _refuse_above(_length(value) + str(value).count("\t") * size)
    elif name in ("format", "format_map"):
        _check_format(value, tuple(params))
    elif name == "join" and params and isinstance(params[0], Sized):
        # The |join filter: (items, glue); str.join: (glue, items). Either way, their product.
        _refuse_above(len(params[0]) * _length(value))


def budgeted_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


def _budgeted_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    # The value is the first argument after the context or environment Jinja may pass first.
    offset = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @wraps(function)  # keeps that pass_context/pass_eval_context mark
    def run(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        if len(args) > offset:
            value, rest = args[offset], args[offset + 1 :]
            if name == "join" and not isinstance(value, Sized):
                value = list(value)  # to know its length
                args = (*args[:offset], value, *rest)
            _precheck(name, value, rest, kwargs)
        return checked(function(*args, **kwargs))

    return run


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, autoescape: bool) -> None:
        # optimized=False: no constant folding, which would run template code at compile time.
        super().__init__(autoescape=autoescape, undefined=ChainableUndefined, optimized=False)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        # Jinja's hook for a different code generation: every loop iterates through the budget,
        # every `~` concatenation is size-checked.
        for loop in source.find_all(nodes.For):
            loop.iter = self._wrap("budgeted_iter", cast(nodes.Expr, loop.iter))
        for concat in list(source.find_all(nodes.Concat)):
            inner = nodes.Concat(concat.nodes, lineno=concat.lineno)
            concat.nodes = [self._wrap("checked", inner)]
        return super()._generate(source, *args, **kwargs)

    @staticmethod
    def _wrap(helper: str, node: nodes.Expr) -> nodes.Call:
        return nodes.Call(
            nodes.EnvironmentAttribute(helper, lineno=node.lineno),
            [node],
            [],
            None,
            None,
            lineno=node.lineno,
        )

    # Looked up by the generated code as `environment.budgeted_iter(...)`.
    budgeted_iter = staticmethod(budgeted_iter)
    checked = staticmethod(checked)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        if operator == "*":
            for size, times in ((left, right), (right, left)):
                if isinstance(size, str | bytes | list | tuple) and isinstance(times, int):
                    _refuse_above(len(size) * times)
        elif operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise BudgetExceeded("an exponent above 1000")
        elif operator == "%":
            _check_format(left, right)
        return checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _budget().tick()
        # A str method, possibly behind the sandbox's safe `format` wrapper.
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(method, "__self__", None), str):
            if method.__name__ == "join" and args and not isinstance(args[0], Sized):
                args = (list(args[0]), *args[1:])  # to know its length
            _precheck(method.__name__, method.__self__, args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs))


def render_budgeted(template: Any, context: dict[str, Any]) -> str:
    """Render under the current budget, stopping as soon as the output outgrows the limit."""
    budget = _budget()
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_CHARS:
            raise BudgetExceeded(f"output of more than {MAX_CHARS} characters")
        if time.monotonic() > budget.deadline:
            raise BudgetExceeded(f"rendering took longer than {DEADLINE_SECONDS:g} s")
        parts.append(chunk)
    return "".join(parts)
