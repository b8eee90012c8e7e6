"""The package's import directions: values at the bottom, each layer imports only below it.

Read from the source with `ast`, nothing is imported: every `import` and `from ... import`
anywhere in a module counts, relative ones resolved, including imports inside functions
and under `if TYPE_CHECKING:`. TYPE_CHECKING imports count on purpose: a type-level
dependency on a layer above is still the design pointing the wrong way (the handler's
TYPE_CHECKING import of daemon.App is what issue 9 found), and `Protocol` interfaces
are the way to name what a lower layer needs. Not seen: imports by string
(`importlib.import_module("mailrouter...")`), which the package does not use.

A failure names the file, the line and the import, and the rule it breaks. A new module
must be placed in LAYERS (test_every_module_has_a_layer says so).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mailrouter"

# Bottom first. A module belongs to the longest group that is its name or a prefix of it
# (`mailrouter.routing` holds every module under routing/). A module may import its own
# group and any group of a LOWER layer; groups within one layer do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("values", ""),                              # "" is the package's own __init__
    ("errors", "charsets", "metrics", "offload", "mimewalk", "tnef", "logs", "newprocess"),
    ("yamlsrc", "message"),
    ("calendars", "config", "addressbook", "addresses"),
    ("loops", "addressquery"),
    ("routing",),                                # the rules engine: pure, no I/O
    ("registry", "delivery", "autoreply", "postfixmaps", "dnscheck", "health"),  # the I/O stages
    ("control", "outbox", "intents"),            # requests, SLA; outgoing mail; copy intents
    ("pipeline", "intake", "admin", "workers", "web", "backlog"),
    ("daemon", "explain"),                       # explain: what the intake and rules answer
    ("cli",),
    ("__main__",),                               # python -m mailrouter
]
# addresses.py is the address book's public face: one group with addressbook/.
SAME_GROUP = {"addresses": "addressbook"}

# The directions issue 9 named, checked on their own so the message says why.
IO = ("registry", "delivery", "intake", "daemon", "pipeline", "admin", "workers", "cli")
FORBIDDEN: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (("values",), ("",), "the value kernel imports nothing from mailrouter"),
    (("routing",), IO, "the rules engine (routing/) imports no I/O module"),
    (("addressbook", "addresses"), ("routing",), "the address book imports nothing from routing"),
    (("delivery",), ("routing",), "delivery imports nothing from routing"),
    (("config",), ("delivery",), "loading the configuration must not load delivery"),
    (("intake",), ("daemon",), "the intake sees the daemon only through intake.handler.Host"),
]


@dataclass(frozen=True)
class Edge:
    module: str          # importer, without the package prefix ("routing.rules"; "" = package)
    target: str          # imported module, same form
    file: str
    line: int
    text: str            # the import statement as written
    type_checking: bool

    def where(self) -> str:
        tc = " (under TYPE_CHECKING)" if self.type_checking else ""
        return f"{self.file}:{self.line}: `{self.text}`{tc}"


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(base: Path, dotted: str) -> bool:
    p = base.joinpath(*dotted.split(".")) if dotted else base
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_edges(package_dir: Path, package: str = PACKAGE) -> list[Edge]:
    """Every import of `package` by a module of it, found anywhere in the module's AST."""
    return [e for path in sorted(package_dir.rglob("*.py"))
            for e in _file_edges(path, package_dir, package)]


def _file_edges(path: Path, package_dir: Path, package: str) -> list[Edge]:
    """The imports of `package` in one file, wherever they stand in it."""
    module = _module_name(path, package_dir)
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    rel_file = str(path.relative_to(package_dir.parent))
    # the package a relative import starts from: the module's own, or itself for __init__
    here = module.split(".") if module else []
    if path.name != "__init__.py":
        here = here[:-1]

    def ours(dotted: str) -> str | None:
        if dotted == package:
            return ""
        return dotted[len(package) + 1:] if dotted.startswith(package + ".") else None

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [t for a in node.names if (t := ours(a.name)) is not None]
        if node.level:
            up = node.level - 1
            assert up <= len(here), f"{rel_file}:{node.lineno}: relative import above the package"
            base: str | None = ".".join(here[:len(here) - up] + ([node.module] if node.module else []))
        else:
            base = ours(node.module or "")
        if base is None:
            return []
        subs = [f"{base}.{a.name}" if base else a.name for a in node.names]
        return list(dict.fromkeys(sub if _is_module(package_dir, sub) else base for sub in subs))

    edges: list[Edge] = []

    def visit(node: ast.AST, tc: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = " ".join(ln.strip() for ln in lines[node.lineno - 1:node.end_lineno])
            edges.extend(Edge(module, t, rel_file, node.lineno, text, tc) for t in targets(node))
        for child in ast.iter_child_nodes(node):
            visit(child, tc or (isinstance(node, ast.If) and _is_type_checking(node.test)
                                and child in node.body))

    visit(ast.parse(source, rel_file), False)
    return edges


def _in(module: str, groups: tuple[str, ...]) -> bool:
    """`module` is one of `groups` or under one; the group "" is the whole package."""
    return any(g == "" or module == g or module.startswith(g + ".") for g in groups)


def group_of(module: str) -> str | None:
    names = [g for layer in LAYERS for g in layer]
    found = [g for g in names if g and (module == g or module.startswith(g + "."))]
    if module == "":
        return ""
    if not found:
        return None
    g = max(found, key=len)
    return SAME_GROUP.get(g, g)


def layer_of(group: str) -> int:
    for i, layer in enumerate(LAYERS):
        if group in layer or any(SAME_GROUP.get(g) == group for g in layer):
            return i
    raise KeyError(group)


def _name(module: str) -> str:
    return f"{PACKAGE}.{module}" if module else PACKAGE


def violations(edges: list[Edge]) -> list[str]:
    """Every import that breaks a rule, one line each, naming file, line and import."""
    out: list[str] = []
    for e in edges:
        named = [why for importers, targets, why in FORBIDDEN
                 if _in(e.module, importers) and _in(e.target, targets)]
        out += [f"{e.where()}: {_name(e.module)} imports {_name(e.target)}; {why}" for why in named]
        src, dst = group_of(e.module), group_of(e.target)
        if named or src is None or dst is None or src == dst:
            continue
        if layer_of(dst) >= layer_of(src):
            out.append(f"{e.where()}: {_name(e.module)} (layer {layer_of(src)}, {src or PACKAGE}) "
                       f"imports {_name(e.target)} (layer {layer_of(dst)}, {dst or PACKAGE}); "
                       f"imports must point down the layers in tests/test_imports.py")
    return out


def _stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


EDGES = import_edges(ROOT / PACKAGE)


def test_import_directions() -> None:
    """Each import points down the layers; none breaks a named direction."""
    bad = violations(EDGES)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_every_module_has_a_layer() -> None:
    """A module outside every group would escape the rules: place it in LAYERS."""
    modules = {_module_name(p, ROOT / PACKAGE) for p in (ROOT / PACKAGE).rglob("*.py")}
    assert [m for m in sorted(modules) if group_of(m) is None] == []


def test_values_imports_only_the_standard_library() -> None:
    """values.py is the kernel: no I/O, no third-party package, nothing of ours."""
    tree = ast.parse((ROOT / PACKAGE / "values.py").read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [n for n in names if not _stdlib(n)] == []


def test_edges_see_every_kind_of_import() -> None:
    """The walk resolves the forms the package uses (so a rule cannot pass by not seeing)."""
    got = {(e.module, e.target) for e in EDGES}
    assert ("pipeline", "registry") in got                  # from .registry import ...
    assert ("daemon", "metrics") in got                     # from . import metrics
    assert ("routing.snapshot", "yamlsrc") in got           # from .. import yamlsrc
    assert ("delivery.smtp", "values") in got               # from mailrouter.values import ...
    assert ("registry.migrations.env", "registry.models") in got
    assert any(e.module == "daemon" and e.target == "workers" for e in EDGES)


BAD_TREE = {
    "__init__.py": "",
    "values.py": "import dataclasses\n",
    "errors.py": "from .values import Reply\n",
    "daemon.py": "from .errors import Reply\n",
    "routing/__init__.py": "",
    "routing/rules.py": (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from ..values import Reply\n"
        "if TYPE_CHECKING:\n"
        "    from ..daemon import App\n"
        "def f() -> None:\n"
        "    from .. import registry\n"),
    "registry.py": "",
    "intake/__init__.py": "",
    "intake/handler.py": "import mailrouter.daemon\n",
    "config.py": "from mailrouter.delivery.smtp import Downstream\n",
    "delivery/__init__.py": "",
    "delivery/smtp.py": "",
}


def test_a_bad_import_fails_with_file_line_and_import(tmp_path: Path) -> None:
    """The checker itself, on a small tree with the imports issue 9 forbids: each is
    reported with its file, line and statement (TYPE_CHECKING and function-level too)."""
    pkg = tmp_path / PACKAGE
    for name, text in BAD_TREE.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text, encoding="utf-8")
    bad = violations(import_edges(pkg))
    assert any(b.startswith("mailrouter/routing/rules.py:5: `from ..daemon import App` "
                            "(under TYPE_CHECKING): mailrouter.routing.rules imports "
                            "mailrouter.daemon; the rules engine") for b in bad), bad
    assert any(b.startswith("mailrouter/routing/rules.py:7: `from .. import registry`: "
                            "mailrouter.routing.rules imports mailrouter.registry;")
               for b in bad), bad
    assert any(b.startswith("mailrouter/intake/handler.py:1: `import mailrouter.daemon`: ")
               and "intake.handler.Host" in b for b in bad), bad
    assert any(b.startswith("mailrouter/config.py:1: `from mailrouter.delivery.smtp import "
                            "Downstream`: mailrouter.config imports mailrouter.delivery.smtp; "
                            "loading the configuration") for b in bad), bad
    # and the layering alone: a low module importing a high one
    (pkg / "errors.py").write_text("from .values import Reply\n\n\ndef g():\n"
                                   "    from .daemon import x\n", encoding="utf-8")
    bad = violations(import_edges(pkg))
    assert any(b.startswith("mailrouter/errors.py:5: `from .daemon import x`: mailrouter.errors "
                            "(layer 1, errors) imports mailrouter.daemon (layer 9, daemon)")
               for b in bad), bad


def test_the_clean_part_of_the_tree_passes(tmp_path: Path) -> None:
    """Downward imports only: no complaint (the checker is not merely always failing)."""
    pkg = tmp_path / PACKAGE
    for name, text in BAD_TREE.items():
        if name in ("routing/rules.py", "intake/handler.py", "config.py"):
            text = "from ..values import Reply\n" if "/" in name else "from .values import Reply\n"
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text, encoding="utf-8")
    assert violations(import_edges(pkg)) == []


@pytest.mark.parametrize("module, group", [("routing.rules", "routing"), ("addresses", "addressbook"),
                                           ("registry.migrations.env", "registry"), ("", "")])
def test_groups(module: str, group: str) -> None:
    assert group_of(module) == group


def test_the_architecture_document_names_every_layer_and_module() -> None:
    """docs/architecture.md's layer table lists each layer of LAYERS with its modules, in
    order, so the document a new engineer reads cannot drift from what this test enforces."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.*?) \|", doc, re.M)}
    assert sorted(rows) == list(range(len(LAYERS))), "layer numbers in the table"
    for n, layer in enumerate(LAYERS):
        for name in layer:
            if name:
                assert re.search(rf"`{re.escape(name)}(\.py|/)`", rows[n]), \
                    f"docs/architecture.md: layer {n} should name `{name}`"
