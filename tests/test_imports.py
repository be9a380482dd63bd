"""No import cycles inside spnas, counting imports inside functions too (TYPE_CHECKING blocks excluded)."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "spnas"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module) -> list[str]:
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m.startswith("spnas")]


def test_no_import_cycles():
    g = nx.DiGraph()
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    for name, path in modules.items():
        g.add_node(name)
        for m in _imports(ast.parse(path.read_text())):
            target = m if m in modules else m.rsplit(".", 1)[0]
            if target != name and target in modules and not name.startswith(target + ".") and target != "spnas":
                g.add_edge(name, target)
    # a package's __init__ re-exports its modules; that is not a cycle with them
    cycles = [c for c in nx.simple_cycles(g) if not any(a.startswith(b + ".") or b.startswith(a + ".") for a in c for b in c)]
    assert not cycles, cycles
    assert g.has_edge("spnas.ir.build", "spnas.ir.arch") and not nx.has_path(g, "spnas.ir.encoding", "spnas.ir.arch")
    assert not nx.has_path(g, "spnas.search.tb", "spnas.search.runner")
