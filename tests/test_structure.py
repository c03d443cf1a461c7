"""The code's shape, as issue 29 set it: one door for the UI, no import cycle, short functions, formatter in charge.

Each test names the bug it catches: a tab that reaches around LabEngine into a concept package, a module pair
that imports each other (hidden today by an import inside a function), a function that grew past a screen, a
`# fmt: skip` that switches the formatter off without a reason, a CLI start that pays for torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lora_demo"
UI_MAY_IMPORT = ("lora_demo.engine", "lora_demo.i18n", "lora_demo.errors", "lora_demo.ui")
MAX_FUNCTION_LINES = 70


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The package's modules `name` imports anywhere in its body (inside functions too), but not under
    `if TYPE_CHECKING:` (those never run). `from a.b import c` counts as a.b.c when c is a module, else a.b;
    the packages on the way (a.b's __init__) count too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too (but not the importer's own
    # packages, which are already running when it is imported).
    out |= {parent for m in out for parent in _parents(m) if not name.startswith(parent + ".")}
    return {m for m in out if m in MODULES and m != name}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_counting_imports_inside_functions():
    found = cycles(GRAPH)
    detail = [{m: sorted(GRAPH[m] & set(c)) for m in c} for c in found]
    assert not found, f"import cycles (module -> the cycle's modules it imports): {detail}"


def test_the_ui_reaches_the_concept_packages_only_through_the_engine():
    wrong = {
        name: sorted(m for m in deps if not m.startswith(UI_MAY_IMPORT))
        for name, deps in GRAPH.items()
        if name.startswith("lora_demo.ui")
    }
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"ui/ modules importing concept packages (go through LabEngine instead): {wrong}"


def test_no_function_longer_than_a_screen():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_formatter_is_switched_off_rarely_and_never_without_a_reason():
    markers = [
        (path, line)
        for path in [*MODULES.values(), *Path(__file__).parent.glob("*.py")]
        for line in path.read_text(encoding="utf-8").splitlines()
        if "# fmt: skip" in line or "# fmt: off" in line
    ]
    assert len(markers) < 30
    bare = [f"{p.name}: {line.strip()}" for p, line in markers if line.rstrip().endswith(("fmt: skip", "fmt: off"))]
    assert not bare, f"say why the formatter is off: {bare}"


def test_the_cli_starts_without_torch():
    for args in (["-c", "import lora_demo.cli"], ["-m", "lora_demo", "--help"]):
        out = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
        loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
        assert "lora_demo.cli" in loaded, out.stderr[-2000:]  # the probe itself worked
        assert "torch" not in loaded, f"python {' '.join(args)} imports torch"
