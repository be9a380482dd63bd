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


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        out[name] = {m if m in modules else m.rsplit(".", 1)[0] for m in _imports(ast.parse(path.read_text()))} - {name}
    return out


def test_the_layers_import_downwards_only():
    """ir at the bottom (with errors and plugins); ops and detect on it, beside each other (the morphism
    checker, which compiles nets to compare outputs, is the one crossing); search above; the CLI on top."""
    def layer(m: str) -> str:
        return m.split(".")[1] if m.count(".") >= 1 else m

    allowed = {
        "ir": {"ir", "errors", "plugins"},
        "errors": {"errors"},
        "schema": {"errors", "schema"},
        "rundir": {"errors", "rundir"},
        "plugins": {"errors", "plugins"},
        "ops": {"ops", "ir", "errors", "plugins"},
        "detect": {"detect", "ir", "errors", "plugins", "schema"},
        "search": {"search", "ops", "detect", "ir", "errors", "plugins", "schema", "rundir"},
    }
    bad = []
    for name, deps in _graph().items():
        lay = layer(name)
        if lay not in allowed or name == "spnas.ops.check" or name.endswith(".__main__"):  # __main__: an entry point, the CLI's layer
            continue
        for d in deps:
            if d != "spnas" and layer(d) not in allowed[lay]:
                bad.append(f"{name} imports {d}")
    assert not bad, bad
    assert "spnas.detect" in _graph()["spnas.ops.check"]  # the documented exception exists, and is the only one


def test_training_and_benchmarking_a_net_never_import_the_search():
    """``spnas train`` and ``spnas bench`` (and what they import, inside functions too) reach no module of
    ``spnas.search``: data settings, loading and the detector live below it."""
    graph = _graph()
    for entry in ("spnas.train", "spnas.bench"):
        seen, todo = set(), [entry]
        while todo:
            m = todo.pop()
            if m in seen or m not in graph:
                continue
            seen.add(m)
            todo += [d for d in graph[m] if d != "spnas"]
        assert not [m for m in seen if m.startswith("spnas.search")], (entry, sorted(m for m in seen if m.startswith("spnas.search")))
        assert "spnas.detect.datasets" in seen  # the walk follows the real imports


def test_one_module_owns_the_run_directory_layout():
    """Only spnas/rundir.py spells a path inside a run directory; the detector layer knows detector
    directories and never a run's layout (it imports nothing of spnas.rundir)."""
    import re

    layout = [r'"journal\.jsonl"', r'"best\.partial"', r'"best\.old"', r'"run\.log"', r'"logbook\.txt"', r'"summary\.json"',
              r'/\s*"best"', r'"config\.yaml"', r'\bout\s*/\s*"candidates"', r'\brun\s*/\s*"candidates"', r'"\.lock"']
    found = []
    for path in ROOT.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if any(re.search(p, line) for p in layout):
                found.append(f"{path.relative_to(ROOT.parent)}:{n}: {line.strip()}")
    assert not found, found
    assert not [m for m, deps in _graph().items() if m.startswith("spnas.detect") and "spnas.rundir" in deps]
    assert "spnas.rundir" in _graph()["spnas.search.runner"]  # the search writes through it


def test_the_loop_services_sit_below_the_loop():
    """What the loop delegates (records, evaluation, the start, the summary, the journal) never imports the
    loop or a strategy (type hints aside): a newcomer can read each without the search's algorithm."""
    graph = _graph()
    services = ["spnas.search.records", "spnas.search.evaluations", "spnas.search.evaluator", "spnas.search.start",
                "spnas.search.summary", "spnas.search.journal", "spnas.search.candidate"]
    for m in services:
        assert not graph[m] & {"spnas.search.runner", "spnas.search.strategy", "spnas.search"}, (m, graph[m])
    assert not graph["spnas.search.records"] - {"spnas.detect.detector", "spnas.detect.train"}  # the records' types only
    assert "spnas.search.runner" not in graph["spnas.search.strategy"]  # a strategy gets the loop, it does not import it
