"""What the package declares and ships: its dependencies, its extras, its data files, its documents."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGE = REPO / "mailrouter"


def _name(requirement: str) -> str:
    """'sqlalchemy[asyncio]>=2' -> 'sqlalchemy' (normalised as PEP 503 does)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()


def _guarded(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a `try:` whose handlers catch ImportError: optional."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for h in node.handlers:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)
                    if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def _imports(optional: bool) -> set[str]:
    """The distributions whose modules mailrouter/ imports anywhere (lazily too): the ones
    it needs, or (optional=True) the ones imported under `try: ... except ImportError`,
    which the code runs without. One not installed here is named by its module."""
    by_module = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            if (id(node) in guarded) != optional:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top == "mailrouter":
                    continue
                if optional and top not in by_module:
                    found.add(_name(top))
                    continue
                assert top in by_module, f"{path}: imports {top!r}, which no installed distribution provides"
                found.update(_name(d) for d in by_module[top])
    return found


def _imported_distributions() -> set[str]:
    return _imports(optional=False)


def test_optional_imports_belong_to_an_extra():
    """An import the code guards with `except ImportError` (uvloop: daemon.py) is no runtime
    dependency but is named by an extra other than `test`, so one can install it."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    offered = {_name(r) for name, reqs in extras.items() if name != "test" for r in reqs}
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    optional = _imports(optional=True) - _imported_distributions()
    assert "uvloop" in optional
    assert optional - offered == set(), "guarded imports no extra offers"
    assert optional & runtime == set(), "a guarded import is declared as a runtime dependency"
    assert {_name(r) for r in extras["fast"]} == {"uvloop"}


def test_postgresql_is_an_extra_and_the_test_extra_covers_the_tests():
    """asyncpg is only in the postgresql extra; what tests/ imports is in the test extra."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {_name(r) for r in extras["postgresql"]} == {"asyncpg"}
    assert "asyncpg" not in {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    test_extra = {_name(r) for r in extras["test"]}
    by_module = importlib.metadata.packages_distributions()
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"mailrouter",
                                                                                           "tests"}:
                dists = {_name(d) for d in by_module.get(top, [top])}
                assert dists & (test_extra | runtime), f"{path.name} imports {top}: add it to the test extra"
    assert {"ruff", "mypy", "types-pyyaml"} <= test_extra    # what .ci/run runs before the tests


def test_aiosmtpd_is_bounded_to_the_version_the_contract_test_checked():
    """aiosmtpd has an upper bound, and the installed version is inside the declared range."""
    spec = next(r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "aiosmtpd")
    lower, upper = re.fullmatch(r"aiosmtpd>=([\d.]+),<([\d.]+)", spec).groups()  # type: ignore[union-attr]
    version = tuple(int(x) for x in importlib.metadata.version("aiosmtpd").split(".")[:3])
    assert tuple(int(x) for x in lower.split(".")) <= version < tuple(int(x) for x in upper.split("."))


def test_example_rules_are_real_files_in_the_package():
    """The default rules ship as files inside the package (no symlink into the checkout), the
    package-data globs cover every one of them, and ./rules in the checkout is the same folder."""
    rules = PACKAGE / "defaults" / "rules"
    assert rules.is_dir() and not rules.is_symlink()
    files = [p for p in rules.rglob("*") if p.is_file()]
    assert {"company.yaml", "routing.yaml", "README.md"} <= {p.name for p in files}
    assert not [p for p in rules.rglob("*") if p.is_symlink()]
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["mailrouter"]
    unshipped = [p for p in files
                 if not any(fnmatch.fnmatch(p.relative_to(PACKAGE).as_posix(), g) for g in globs)]
    assert unshipped == [], "add a package-data glob in pyproject.toml for these"
    top = REPO / "rules"
    if top.exists():       # a checkout, not an unpacked sdist
        assert top.resolve() == rules.resolve(), "rules/ must be the package's folder, not a copy"


def test_license_is_the_one_pyproject_names():
    """LICENSE holds the Apache License 2.0 text that pyproject.toml declares."""
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


DOCUMENTS = ["README.md", "docs/README.md", "docs/architecture.md", "docs/install.md", "docs/performance.md",
             "bench/README.md",
             "mailrouter/defaults/rules/README.md"]


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_documents_point_only_inside_the_repository(doc):
    """Every relative link in the user-facing documents names a file of the repository,
    and none of them sends the reader to notes outside it."""
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.exists(), f"{doc}: link to {target} names no file"
        assert resolved.is_relative_to(REPO), f"{doc}: link to {target} leaves the repository"
    assert not re.search(r"DESIGN\.md|shared notes|/work/", text), f"{doc} points outside the repository"



def _config_keys() -> set[str]:
    """Every key config.py accepts: the top-level keys and the known-keys argument of each
    `c.section(doc, NAME, KEYS)` and `unknown_keys(value, KEYS)` call, evaluated in the
    module (a name assigned in the same function, as `keys = tuple(...)`, is followed)."""
    import mailrouter.config as module

    source = (PACKAGE / "config.py").read_text(encoding="utf-8")
    keys = set(module.TOP_KEYS)
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef):
            continue
        local = {t.id: n.value for n in ast.walk(func) if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)}
        for call in ast.walk(func):
            if not isinstance(call, ast.Call):
                continue
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            if name not in ("section", "unknown_keys") or len(call.args) < 2:
                continue
            known = call.args[-1]
            if isinstance(known, ast.Name) and known.id in {a.arg for a in func.args.args}:
                continue     # the helper itself, `section(self, doc, key, known)`
            if isinstance(known, ast.Name) and known.id in local:
                known = local[known.id]
            keys.update(eval(compile(ast.Expression(known), "config.py", "eval"), vars(module)))  # noqa: S307
    return keys


def test_config_example_names_every_key_the_config_accepts():
    """config.example.yaml "lists every key with a comment" (README, Configuration): each key
    config.py accepts appears in it as `key:`, set or commented out."""
    keys = _config_keys()
    assert {"listen", "smtp", "token_file", "max_errors", "sync", "pool_size", "check",
            "scan_every", "on_reload", "session_ttl"} <= keys   # the walk found the sections
    example = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    missing = sorted(k for k in keys if not re.search(rf"(^|[\s{{,#]){re.escape(k)}:", example, re.M))
    assert missing == [], f"config.example.yaml does not name: {missing}"

# -- PostgreSQL without its extra -----------------------------------------------------------

BLOCK_ASYNCPG = '''
import sys

class _NoAsyncpg:
    """As if `pip install mailrouter` had been run without the postgresql extra."""
    def find_spec(self, name, path=None, target=None):
        if name == "asyncpg" or name.startswith("asyncpg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoAsyncpg())
'''


@pytest.mark.parametrize("cmd", [["registry"], ["db", "upgrade"], ["run"]])
def test_a_postgresql_registry_without_asyncpg_names_the_extra(tmp_path, cmd):
    """With asyncpg not importable (a sitecustomize blocks it in the child), a postgresql
    registry URL is refused in one line that names the install command; exit 2; the
    password is not shown."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_ASYNCPG, encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("listen: {smtp: '127.0.0.1:0', lmtp: '127.0.0.1:0', admin: '127.0.0.1:0'}\n"
                   "workers: 1\nregistry: {url: 'postgresql://mr:s3cret@db.internal:5432/mail'}\n"
                   f"routing: ['{PACKAGE / 'defaults' / 'rules' / '*.yaml'}']\n"
                   f"delivery: {{maildir_root: '{tmp_path / 'mail'}'}}\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "site"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("MAILROUTER_CONFIG", None)
    out = subprocess.run([sys.executable, "-m", "mailrouter.cli", *cmd, "-c", str(cfg)], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.splitlines() if "asyncpg" in l]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert ("the registry postgresql+asyncpg://db.internal:5432/mail is PostgreSQL, which needs the "
            "asyncpg driver: pip install 'mailrouter[postgresql]'") in lines[0]
    assert "s3cret" not in out.stderr + out.stdout
