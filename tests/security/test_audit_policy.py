"""The dependency audit's policy (setup/audit/check.py) over pip-audit JSON reports."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit
TODAY = dt.date(2026, 12, 1)


def load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_check", REPO / "setup" / "audit" / "check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check = load_check()


def report(*vulns: dict[str, Any], name: str = "somepkg", skipped: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "dependencies": [
            {"name": name, "version": "1.0", "vulns": list(vulns)},
            {"name": "clean", "version": "2.0", "vulns": []},
            *({"name": n, "skip_reason": "Dependency not found on PyPI"} for n in skipped),
        ]
    }


FIXED = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-1"], "fix_versions": ["1.1"]}
UNFIXED = {"id": "GHSA-xxxx-yyyy-zzzz", "aliases": [], "fix_versions": []}


def exception(review_by: dt.date, vuln_id: str = "CVE-2099-1", package: str = "somepkg") -> Any:
    return check.Exception_(vuln_id, package, "not reachable from our code", dt.date(2026, 11, 1), review_by)


def test_a_clean_report_passes() -> None:
    verdict = check.judge(report(), [], TODAY)
    assert verdict.ok
    assert verdict.audited == 2


def test_a_vulnerability_with_a_fixed_version_fails_until_upgraded() -> None:
    verdict = check.judge(report(FIXED), [], TODAY)
    assert not verdict.ok
    assert "fixed in 1.1" in verdict.failures[0]
    assert "uv lock --upgrade-package somepkg" in verdict.failures[0]


def test_a_vulnerability_without_a_fix_needs_a_dated_exception() -> None:
    assert "add it to setup/audit/exceptions.toml" in check.judge(report(UNFIXED), [], TODAY).failures[0]
    verdict = check.judge(report(UNFIXED), [exception(TODAY, vuln_id=UNFIXED["id"])], TODAY)
    assert verdict.ok
    assert verdict.accepted


def test_an_exception_matches_an_alias_and_only_its_package() -> None:
    assert check.judge(report(FIXED), [exception(dt.date(2027, 1, 1))], TODAY).ok
    assert not check.judge(report(FIXED), [exception(dt.date(2027, 1, 1), package="other")], TODAY).ok


def test_an_expired_exception_fails_again() -> None:
    verdict = check.judge(report(FIXED), [exception(dt.date(2026, 11, 30))], TODAY)
    assert not verdict.ok
    assert "expired on 2026-11-30" in verdict.failures[0]


def test_an_exception_that_matches_nothing_is_reported_as_stale() -> None:
    verdict = check.judge(report(), [exception(dt.date(2027, 1, 1))], TODAY)
    assert verdict.ok
    assert "stale exception CVE-2099-1" in verdict.warnings[0]


def test_unaudited_packages_warn_and_fail_when_strict() -> None:
    assert check.judge(report(skipped=("x",)), [], TODAY).ok
    strict = check.judge(report(skipped=("x",)), [], TODAY, strict=True)
    assert not strict.ok
    assert "1 package(s) not audited" in strict.failures[0]


def test_the_exceptions_file_is_complete_and_dated() -> None:
    entries = check.load_exceptions(REPO / "setup" / "audit" / "exceptions.toml")
    for entry in entries:
        assert entry.reason.strip()
        assert entry.date <= entry.review_by


def test_an_exception_without_a_review_date_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exceptions.toml"
    path.write_text('[[exception]]\nid = "X"\npackage = "p"\nreason = "r"\ndate = 2026-12-01\n')
    with pytest.raises(ValueError, match="lacks review_by"):
        check.load_exceptions(path)
