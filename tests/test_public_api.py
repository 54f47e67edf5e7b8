"""Every public function and class of the three packages carries a Google-style docstring.

The public API is the names in ``__all__`` of :mod:`solvable_attention`, :mod:`state_evolution`,
:mod:`simulations` and :mod:`simulations.simulator`, plus every module-level function and class of every
module of the three packages whose name has no leading underscore and whose ``__module__`` is that module,
plus the public methods those classes define. Each needs a docstring; one with parameters needs ``Args:``
(``Attributes:`` naming every field for a dataclass or named tuple); one that returns a value needs ``Returns:`` (or
``Yields:``); one whose body raises needs ``Raises:``. Import only: nothing is solved or simulated.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap

import pytest

PACKAGES = ("solvable_attention", "state_evolution", "simulations")
API_PACKAGES = ("solvable_attention", "state_evolution", "simulations", "simulations.simulator")

# Modules not yet held to the rule: files under a concurrent refactor, whose docstrings follow once it
# has landed. The list may only shrink: a module listed here that already complies fails the test.
PENDING = {
    "solvable_attention.data",
    "solvable_attention.random_matrices",
    "solvable_attention.attention",
    "state_evolution.goe_coordinates",
    "state_evolution.spectral_prior",
    "state_evolution.fixed_point",
    "state_evolution.loss_derivatives",
    "simulations.simulator.objectives",
    "simulations.simulator.lora_fit",
    "simulations.campaigns.validate_active",
    "simulations.campaigns.validate_finetuning",
    "simulations.campaigns.validate_pretraining",
    "simulations.campaigns.convergence",
    "simulations.campaigns.validation",
    "simulations.campaigns.finetuning_claims",
    "simulations.figures.common",
}

# Functions whose value is a side effect (a figure, a registration, a command): no ``Returns:`` needed.
_NO_RETURNS_PREFIXES = ("plot", "register", "cmd_", "main")


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + ".")]
    return sorted(set(names))


MODULES = _modules()


def _sections(doc: str) -> set[str]:
    return {line.strip()[:-1] for line in doc.splitlines()
            if line.strip().endswith(":") and line.strip()[:-1] in
            {"Args", "Arguments", "Attributes", "Fields", "Returns", "Yields", "Raises"}}


def _source_tree(obj) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return None


def _own_nodes(func_node: ast.AST):
    """The nodes of a function's own body, not of the functions and classes nested in it."""
    stack = list(ast.iter_child_nodes(func_node))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _function_node(tree):
    if tree is None:
        return None
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def _returns_value(func, node) -> bool:
    name = func.__name__
    if name.startswith(_NO_RETURNS_PREFIXES) or name == "__init__":
        return False
    annotation = inspect.signature(func).return_annotation
    if annotation in (None, "None", type(None)):
        return False
    if annotation is not inspect.Signature.empty:
        return True
    if node is None:
        return False
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) or (isinstance(n, ast.Return) and n.value is not None)
               for n in _own_nodes(node))


def _raises(node) -> bool:
    return node is not None and any(isinstance(n, ast.Raise) for n in _own_nodes(node))


def check_function(func, label: str) -> list[str]:
    """Problems of one function's docstring (empty when it complies)."""
    doc = inspect.getdoc(func) or ""
    if not doc.strip():
        return [f"{label}: no docstring"]
    sections = _sections(doc)
    node = _function_node(_source_tree(func))
    problems = []
    params = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
    if params and not sections & {"Args", "Arguments"}:
        problems.append(f"{label}: parameters {params} but no Args: section")
    if _returns_value(func, node) and not sections & {"Returns", "Yields"}:
        problems.append(f"{label}: returns a value but no Returns: section")
    if _raises(node) and "Raises" not in sections:
        problems.append(f"{label}: raises but no Raises: section")
    return problems


def check_class(cls, label: str) -> list[str]:
    """Problems of one class's docstring and of its public methods' docstrings."""
    doc = inspect.getdoc(cls) or ""
    if not doc.strip() or doc == inspect.getdoc(object):
        return [f"{label}: no docstring"]
    sections = _sections(doc)
    problems = []
    record = dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))
    if record:  # a dataclass or a named tuple: every field under Attributes:
        fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)
        if fields and not sections & {"Attributes", "Fields"}:
            problems.append(f"{label}: dataclass without an Attributes: section")
        elif fields:
            body = doc.split("Attributes:" if "Attributes" in sections else "Fields:", 1)[1]
            missing = [f for f in fields if f not in body]
            if missing:
                problems.append(f"{label}: fields {missing} not in Attributes:")
    elif issubclass(cls, Exception) or issubclass(cls, Warning):
        pass
    elif "__init__" in vars(cls) and inspect.isfunction(vars(cls)["__init__"]):
        params = [p for p in inspect.signature(vars(cls)["__init__"]).parameters if p != "self"]
        init_doc = inspect.getdoc(vars(cls)["__init__"]) or ""
        if params and not (sections | _sections(init_doc)) & {"Args", "Arguments", "Attributes"}:
            problems.append(f"{label}: constructor parameters {params} but no Args: section")
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            problems += check_function(member, f"{label}.{name}")
        elif isinstance(member, property) and not (inspect.getdoc(member) or "").strip():
            problems.append(f"{label}.{name}: property without a docstring")
    return problems


def check_object(obj, label: str) -> list[str]:
    return check_class(obj, label) if inspect.isclass(obj) else check_function(obj, label)


def module_problems(module_name: str) -> list[str]:
    """Problems of one module: its docstring and those of its public functions and classes."""
    module = importlib.import_module(module_name)
    problems = [] if (module.__doc__ or "").strip() else [f"{module_name}: no module docstring"]
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            problems += check_object(obj, f"{module_name}.{name}")
    return problems


@pytest.mark.parametrize("module_name", [m for m in MODULES if m not in PENDING])
def test_module_public_docstrings(module_name):
    problems = module_problems(module_name)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module_name", sorted(PENDING))
def test_pending_modules_still_pending(module_name):
    assert module_name in MODULES, f"{module_name} in PENDING is not a module of the packages"
    assert module_problems(module_name), (f"{module_name} now complies: remove it from PENDING")


@pytest.mark.parametrize("package", API_PACKAGES)
def test_package_api_documented(package):
    module = importlib.import_module(package)
    assert (module.__doc__ or "").strip(), f"{package}: no package docstring"
    problems = []
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) in PENDING:
            continue
        problems += check_object(obj, f"{package}.{name}")
    assert not problems, "\n".join(problems)


def test_checker_flags_missing_sections():
    def undocumented(x, y):
        if x < 0:
            raise ValueError("x")
        return x + y

    def bare(x):
        """Add one."""
        if x < 0:
            raise ValueError("x")
        return x + 1

    def documented(x):
        """Add one.

        Args:
            x: a number.

        Returns:
            ``x + 1``.

        Raises:
            ValueError: if ``x < 0``.
        """
        if x < 0:
            raise ValueError("x")
        return x + 1

    @dataclasses.dataclass
    class Record:
        """A record.

        Attributes:
            a: the first field.
        """
        a: int
        b: int

    assert check_function(undocumented, "undocumented") == ["undocumented: no docstring"]
    problems = check_function(bare, "bare")
    assert len(problems) == 3 and all(s in " ".join(problems) for s in ("Args:", "Returns:", "Raises:"))
    assert check_function(documented, "documented") == []
    assert check_class(Record, "Record") == ["Record: fields ['b'] not in Attributes:"]


def test_model_package_docstring_names_its_layer():
    import solvable_attention

    assert "theory-vs-simulation comparison layer" not in solvable_attention.__doc__
