"""What a mail admin meets first, run as they run it (`python -m mailrouter.cli` in a
subprocess): errors that name the file to open, start-up refusals in one line."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import free_port, write_config
from tests.test_cli import mr


def test_no_routing_files_names_the_config_file(tmp_path: Path) -> None:
    """`routing:` matching no file: check and run name the config file that says so; the
    message was "<config>: no routing files match ...", which named nothing to open."""
    cfg = write_config(tmp_path / "config.yaml", free_port(), free_port(), free_port(),
                       "workers: 1\n", routing=str(tmp_path / "nothere" / "*.yaml"))
    want = f"{cfg}: no routing files match {tmp_path / 'nothere' / '*.yaml'}"
    check = mr("check", "-c", str(cfg))
    assert check.returncode == 1 and want in check.stderr, check.stderr
    run = mr("run", "-c", str(cfg))
    assert run.returncode == 2 and want in run.stderr, run.stderr
    assert "<config>" not in check.stderr + run.stderr
