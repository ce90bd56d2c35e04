"""The layering that docs/architecture.md draws, read from the code's own import statements: no import circle
anywhere (the library's own modules included), the library imports no client, lm uses only the library, drawing imports no model,
data_prep takes from handwriting_hm only the prepared files' storage and the normalisation, the unconditional
model knows nothing of texts, and the model folders import data_prep only inside the functions that read it.
Inside the library: the settings' names import nothing of it and the cell's types only them, the fast paths import
neither the reference loop nor the dispatch, and the dispatch is the one module outside paths/ that names a path."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("handwriting_hm", "data_prep", "app", "lm")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def imports(module: str) -> list[tuple[str, bool]]:
    """(imported module of this tree, made at module level) for every import statement of `module`; imports
    under `if TYPE_CHECKING:` are left out (they never run)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                found.extend((f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, top)
                             for alias in child.names)
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return [(name, top) for name, top in found if name in MODULES]


def under(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def find_circle(modules: list[str]) -> list[str] | None:
    """One import circle among `modules` (every import, at module level or inside a function), or None."""
    graph = {m: {name for name, _ in imports(m) if name in graph_nodes and name != m}
             for graph_nodes in [set(modules)] for m in modules}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                return path[path.index(name):] + [module, name] if name in path else path + [module, name]
            if name not in state:
                found = walk(name, path + [module])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = walk(module, [])
            if found:
                return found
    return None


def test_no_circle_among_the_client_modules():
    circle = find_circle([m for m in MODULES if not under(m, "handwriting_hm.hmlstm")])
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_no_circle_inside_the_library():
    circle = find_circle([m for m in MODULES if under(m, "handwriting_hm.hmlstm")])
    assert circle is None, "import circle: " + " -> ".join(circle or [])


LIBRARY = "handwriting_hm.hmlstm"
FAST_PATHS = tuple(f"{LIBRARY}.paths.{name}" for name in ("fused", "sparse", "sparse_native", "triton_cell",
                                                          "triton_kernels"))


@pytest.mark.parametrize("module, allowed", [
    (f"{LIBRARY}.settings", ()),
    (f"{LIBRARY}.cell_types", (f"{LIBRARY}.settings",)),
    (f"{LIBRARY}.lstm", (f"{LIBRARY}.cell_types",)),
    (f"{LIBRARY}.paths", (f"{LIBRARY}.cell_types", f"{LIBRARY}.paths", f"{LIBRARY}.atomic")),  # atomic: the C cache
    (f"{LIBRARY}.dispatch", (f"{LIBRARY}.cell_types", f"{LIBRARY}.paths", f"{LIBRARY}.settings")),
    (f"{LIBRARY}.core", (f"{LIBRARY}.cell_types", f"{LIBRARY}.dispatch", f"{LIBRARY}.lstm", f"{LIBRARY}.settings")),
    (f"{LIBRARY}.training", (f"{LIBRARY}.training", f"{LIBRARY}.atomic")),  # the loop's parts know no loop
    (f"{LIBRARY}.stepper", (f"{LIBRARY}.cell_types", f"{LIBRARY}.paths.few_rows")),
])
def test_the_library_layers(module, allowed):
    """The settings' names (no torch) at the bottom, the cell's types on them, then the LSTM and the fast paths,
    the dispatch above the paths, and the reference loop on top. The training loop's
    parts (training/) import neither the loop (trainer) nor the cell."""
    for name in (m for m in MODULES if under(m, module)):
        for imported, _ in imports(name):
            assert under(imported, LIBRARY + ".paths") and under(name, LIBRARY + ".paths") \
                or under(imported, *allowed) or not under(imported, LIBRARY), f"{name} imports {imported}"


def test_only_the_dispatch_names_a_fast_path():
    for module in (m for m in MODULES if not under(m, LIBRARY + ".paths", LIBRARY + ".dispatch")):
        for name, _ in imports(module):
            assert not under(name, *FAST_PATHS), f"{module} imports {name}: the fast paths are reached by the dispatch"


@pytest.mark.parametrize("package, allowed", [
    ("handwriting_hm.hmlstm", ("handwriting_hm.hmlstm",)),
    ("lm", ("lm", "handwriting_hm.hmlstm")),
    ("handwriting_hm.drawing", ("handwriting_hm.drawing", "handwriting_hm.hmlstm", "handwriting_hm.letter_boundaries")),
    ("data_prep", ("data_prep", "handwriting_hm.hmlstm.archive", "handwriting_hm.hmlstm.atomic",
                   "handwriting_hm.normalisation")),
    ("handwriting_hm.unconditional", ("handwriting_hm.unconditional", "handwriting_hm.hmlstm", "handwriting_hm.drawing",
                                      "handwriting_hm.mixture", "handwriting_hm.normalisation",
                                      "handwriting_hm.scoring", "handwriting_hm.shipped", "data_prep")),
])
def test_a_package_imports_only_what_its_layer_may(package, allowed):
    for module in (m for m in MODULES if under(m, package)):
        for name, _ in imports(module):
            assert under(name, *allowed), f"{module} imports {name}"


def test_the_models_import_data_prep_only_where_they_read_a_prepared_file():
    for module in (m for m in MODULES if under(m, "handwriting_hm.unconditional", "handwriting_hm.synthesis")):
        for name, top in imports(module):
            assert not (top and under(name, "data_prep")), f"{module} imports {name} at module level"


def test_every_package_is_installed():
    """pyproject.toml's packages name every folder with an __init__.py (a missing one installs without it)."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {module_name(path) for package in PACKAGES for path in (ROOT / package).rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
