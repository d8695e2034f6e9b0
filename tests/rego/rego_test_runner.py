"""A tiny `opa test` on the embedded OPA engine.

Loads every module and data file of a directory as `opa run` does (the OPA stand-in's
loader), finds the `test_*` rules of its `_test.rego` modules with OPA's own parser
(`rego.parse_module`), and evaluates each one: a test passes when it evaluates to `true`.
The engine evaluates builtins strictly, so a test whose evaluation raises a builtin error
fails here, where `opa test` (lenient by default) would only see it undefined.

`run_opa_test` runs a real `opa test` with JSON output, for when a binary is available.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opa_bindings import OpaEngine, OpaError, OpaUndefinedError

from tests.opa_server.loader import load_paths

TEST_MODULE_SUFFIX = "_test.rego"
TEST_RULE_PREFIX = "test_"


@dataclass(frozen=True, order=True)
class RegoTest:
    file: str  # relative to the directory the tests were found in
    package: tuple[str, ...]
    name: str

    @property
    def test_id(self) -> str:
        return f"{self.file}::{self.name}"

    @property
    def qualified_name(self) -> str:
        """`data.<package>.<name>`, as `opa test` names it."""
        return ".".join(("data", *self.package, self.name))


class DiscoveryError(Exception):
    """A test module that cannot be parsed, or a test that `opa test` would run twice."""


def find_test_modules(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob(f"*{TEST_MODULE_SUFFIX}") if p.is_file())


def discover(directory: Path) -> list[RegoTest]:
    """Every `test_*` rule of the `_test.rego` modules under `directory`, sorted."""
    found: list[RegoTest] = []
    with OpaEngine() as parser:
        for file in find_test_modules(directory):
            module = _parse(parser, file)
            package = _package(module, file)
            relative = file.relative_to(directory).as_posix()
            found += [RegoTest(relative, package, name) for name in _test_rule_names(module)]
    _refuse_duplicates(found)
    return sorted(found)


def _parse(engine: OpaEngine, file: Path) -> dict[str, Any]:
    try:
        [bindings] = engine.eval_query(
            "module := rego.parse_module(input.name, input.source)",
            {"name": file.name, "source": file.read_text(encoding="utf-8")},
        )
    except OpaError as exc:
        raise DiscoveryError(f"{file}: {exc.message}") from None
    module: dict[str, Any] = bindings["module"]
    return module


def _package(module: dict[str, Any], file: Path) -> tuple[str, ...]:
    data, *rest = module["package"]["path"]
    if data.get("value") != "data" or not all(term.get("type") == "string" for term in rest):
        raise DiscoveryError(f"{file}: unexpected package path {module['package']['path']}")
    return tuple(str(term["value"]) for term in rest)


def _test_rule_names(module: dict[str, Any]) -> Iterable[str]:
    for rule in module.get("rules", []):
        ref = rule["head"].get("ref", [])
        name = str(ref[0]["value"]) if len(ref) == 1 else ""
        if name.startswith(TEST_RULE_PREFIX):
            yield name


def _refuse_duplicates(found: Sequence[RegoTest]) -> None:
    # Rules of one name are one document: `opa test` reports each definition, this
    # runner could only evaluate their union, so a second definition is refused.
    seen: dict[str, RegoTest] = {}
    for test in found:
        earlier = seen.setdefault(test.qualified_name, test)
        if earlier is not test:
            raise DiscoveryError(f"{test.qualified_name} is defined twice ({earlier.file}, {test.file})")


def load_engine(directory: Path) -> OpaEngine:
    """An engine holding every module and data file of `directory`, as `opa run DIR` loads them."""
    engine = OpaEngine()
    try:
        load_paths(engine, [str(directory)])
    except BaseException:
        engine.close()
        raise
    return engine


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str


def _outcome(value: Any) -> Outcome:
    if value is _UNDEFINED:
        return Outcome(False, "undefined (a condition of the test is false)")
    if value is not True:
        return Outcome(False, f"evaluated to {json.dumps(value)}, not true")
    return Outcome(True, "")


_UNDEFINED: Any = object()


class Evaluator:
    """Evaluates tests, a whole package per query where it can.

    Each distinct query costs the engine tens of milliseconds to prepare, so the package
    document (which holds the value of every defined test rule) is asked for once; only
    when that raises an error is each test of the package evaluated alone, so that the
    error is charged to the test that raises it.
    """

    def __init__(self, engine: OpaEngine) -> None:
        self.engine = engine
        self._packages: dict[tuple[str, ...], dict[str, Any] | None] = {}

    def evaluate(self, test: RegoTest) -> Outcome:
        document = self._package_document(test.package)
        if document is not None:
            return _outcome(document.get(test.name, _UNDEFINED))
        return self._evaluate_alone(test)

    def _package_document(self, package: tuple[str, ...]) -> dict[str, Any] | None:
        if package not in self._packages:
            try:
                results = self.engine.eval_query(f"document := {_ref(package)}")
            except OpaError:
                self._packages[package] = None
            else:
                document = results[0]["document"] if results else {}
                self._packages[package] = document if isinstance(document, dict) else None
        return self._packages[package]

    def _evaluate_alone(self, test: RegoTest) -> Outcome:
        try:
            results = self.engine.eval_query(f"result := {_ref((*test.package, test.name))}")
        except OpaUndefinedError:
            return _outcome(_UNDEFINED)
        except OpaError as exc:
            return Outcome(False, f"error: {exc.message}")
        return _outcome(results[0]["result"] if results else _UNDEFINED)


def _ref(path: Sequence[str]) -> str:
    return "data" + "".join(f"[{json.dumps(part)}]" for part in path)


def opa_test_command(binary: str, directory: Path) -> list[str]:
    return [binary, "test", "--format=json", str(directory)]


@dataclass(frozen=True)
class OpaTestRun:
    returncode: int
    passed: frozenset[str]  # qualified names
    failed: frozenset[str]
    output: str


def run_opa_test(binary: str, directory: Path, timeout: float = 120.0) -> OpaTestRun:
    """Run `opa test --format=json DIR` and sort its results into passed and failed."""
    done = subprocess.run(
        opa_test_command(binary, directory), capture_output=True, text=True, timeout=timeout, check=False
    )
    passed: set[str] = set()
    failed: set[str] = set()
    try:
        results = json.loads(done.stdout)
    except ValueError:
        results = []
    for result in results if isinstance(results, list) else []:
        package = str(result.get("package", ""))
        package = package if package.startswith("data.") else f"data.{package}"
        name = f"{package}.{result.get('name', '')}"
        if result.get("fail") or result.get("error") or result.get("skip"):
            failed.add(name)
        else:
            passed.add(name)
    return OpaTestRun(done.returncode, frozenset(passed), frozenset(failed), done.stdout + done.stderr)
