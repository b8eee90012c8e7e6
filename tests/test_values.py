"""The reply table in values.py: one place for every reply, each one well-formed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailrouter.values import REPLIES, Reply

ROOT = Path(__file__).resolve().parent.parent
REPLY_TEXT = re.compile(r"^[2-5]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b")


def test_every_reply_is_well_formed() -> None:
    """Basic code and RFC 3463 class agree (4xx is 4.x.x), and no reply is in twice."""
    for name, r in REPLIES.items():
        assert 200 <= r.code < 600 and r.text, name
        if r.code == 354:              # the DATA go-ahead has no enhanced code
            assert r.status == "", name
        else:
            assert r.status[0] == str(r.code)[0], name
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", r.status), name
    assert len(set(REPLIES.values())) == len(REPLIES)


def test_replies_are_written_only_in_values() -> None:
    """No module but values.py builds a Reply from a literal code or writes a reply string
    ("451 4.3.0 ..."): they name a table constant. Replies computed from a downstream's
    (delivery.smtp.parse_reply, delivery.replies.ours) take their code from a variable."""
    found = []
    for path in sorted((ROOT / "mailrouter").rglob("*.py")):
        if path.name == "values.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                        ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Reply"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                found.append(f"{where}: Reply({node.args[0].value!r}, ...)")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in docstrings and REPLY_TEXT.match(node.value)):
                found.append(f"{where}: {node.value!r}")
    assert found == [], "reply literals outside values.py:\n" + "\n".join(found)


def test_with_text_keeps_code_and_status() -> None:
    r = Reply(551, "5.1.6", "Recipient has moved").with_text("try <b@example.com>")
    assert (r.code, r.status, str(r)) == (551, "5.1.6", "551 5.1.6 try <b@example.com>")
