"""The fault matrix runs against the real lab (test/lab/lab), with the integration suite's fixtures."""

from __future__ import annotations

from faulttools import RESULTS, table
from labfixtures import deployed, lab_up  # noqa: F401 (the integration suite's fixtures, found by name)


def pytest_terminal_summary(terminalreporter) -> None:
    """The matrix as a table per profile, whatever passed or failed."""
    for profile, results in RESULTS.items():
        terminalreporter.section(f"fault matrix, profile {profile}")
        for line in table(profile, results):
            terminalreporter.write_line(line)
