"""The CEL runtime behind the policy engine, kept behind a small interface.

cel-python is the reference engine. It offers two runners: an interpreter
that walks the parse tree, and a "compiled" runner that transpiles the tree to
Python. The engine only ever calls `CelRuntime.compile` and
`Program.evaluate`, so a faster CEL runtime can be added here and the same
policy tests run on every runtime (`RUNTIMES`).

Two facts of cel-python 0.5.0 shape this module:
- its parser is a process-wide singleton whose tree class is fixed by the first
  `Environment` created; the compiled runner needs `TranspilerTree` nodes, which
  the interpreter also accepts, so the compiled environment is created first;
- the compiled runner keeps its activation in module globals while it runs and
  names host functions by their module path, so it is not safe to run from
  several threads at once: `CompiledRuntime` serialises its evaluations with a
  lock and makes the host functions' modules visible to the generated code.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import celpy
import celpy.evaluation
from celpy.celparser import CELParseError, CELParser

__all__ = ["RUNTIMES", "CELParseError", "CelRuntime", "Program", "runtime"]

# Order matters, see the module docstring: drop a parser another module may
# have built with plain trees, and let the compiled environment build it.
CELParser.CEL_PARSER = None
_COMPILED_ENV = celpy.Environment(runner_class=celpy.CompiledRunner)
_INTERPRETED_ENV = celpy.Environment()

HostFunctions = Mapping[str, Callable[..., Any]]


class Program(Protocol):
    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate against one activation; raise on an evaluation error."""


class CelRuntime(Protocol):
    name: str

    def compile(self, source: str, functions: HostFunctions) -> Program:
        """Parse and prepare `source`; raise `CELParseError` on bad syntax."""


class InterpretedRuntime:
    """cel-python's tree-walking interpreter: the default, thread-safe."""

    name = "interpreted"

    def compile(self, source: str, functions: HostFunctions) -> Program:
        ast = _INTERPRETED_ENV.compile(source)
        runner: Program = _INTERPRETED_ENV.program(ast, functions=dict(functions))
        return runner


class _LockedProgram:
    def __init__(self, runner: Any, lock: threading.Lock) -> None:
        self._runner = runner
        self._lock = lock

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        with self._lock:
            return self._runner.evaluate(activation)


class CompiledRuntime:
    """cel-python's transpiler to Python: faster, one evaluation at a time."""

    name = "compiled"
    _lock = threading.Lock()

    def compile(self, source: str, functions: HostFunctions) -> Program:
        for function in functions.values():
            _expose_module(function)
        ast = _COMPILED_ENV.compile(source)
        runner = _COMPILED_ENV.program(ast, functions=dict(functions))
        return _LockedProgram(runner, self._lock)


def _expose_module(function: Callable[..., Any]) -> None:
    """Let transpiled code reach `function` by its dotted module path."""
    top = function.__module__.split(".")[0]
    namespace = vars(celpy.evaluation)
    if top not in namespace:
        namespace[top] = sys.modules.get(top) or importlib.import_module(top)


RUNTIMES: dict[str, CelRuntime] = {
    "interpreted": InterpretedRuntime(),
    "compiled": CompiledRuntime(),
}


def runtime(name: str) -> CelRuntime:
    """The runtime called `name`; `ValueError` naming the known ones."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(
            f"unknown CEL runtime {name!r}; known: {', '.join(RUNTIMES)}"
        ) from None
