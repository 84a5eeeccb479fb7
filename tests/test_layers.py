"""The package's floors: a lower one never imports from a higher one (kgqa/data is read by kgqa/kb,
so kgqa/data must not import kgqa.kb or anything else above it)."""
import ast
from pathlib import Path

import kgqa

PACKAGE = Path(kgqa.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function, relative imports made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_imported_modules_reads_the_imports_of_a_file():
    names = imported_modules(PACKAGE / "data" / "augment.py")
    assert "kgqa.data.kgclue" in names and "numpy" in names
    assert imported_modules(PACKAGE / "kb" / "columns.py") & {"kgqa.data.triples", "kgqa.data"}


def test_the_data_layer_imports_nothing_above_it():
    allowed = ("kgqa.data", "kgqa.errors")
    upward = {f"{path.relative_to(PACKAGE.parent)}: {name}"
              for path in sorted((PACKAGE / "data").rglob("*.py"))
              for name in imported_modules(path)
              if name.split(".")[0] == "kgqa" and name != "kgqa" and not name.startswith(allowed)}
    assert not upward, f"kgqa/data imports from the floors above it: {sorted(upward)}"
