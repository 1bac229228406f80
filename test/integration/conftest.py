"""Integration tests run against the real multi-host lab (test/lab/lab)."""

from __future__ import annotations

from labfixtures import SETUPS, deployed, lab_up  # noqa: F401 (fixtures, found by name)


def pytest_terminal_summary(terminalreporter) -> None:
    """Where the deployed fixtures spent their time: the suite's time is watched."""
    if SETUPS:
        terminalreporter.section("deployed fixture: where the setup time went")
        for line in SETUPS:
            terminalreporter.write_line(line)
