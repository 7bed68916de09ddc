"""The audit's policy over a pip-audit JSON report (run by setup/audit.sh; tests/security/test_audit_policy.py).

- A vulnerability with a fixed version fails until the package is upgraded (`uv lock --upgrade-package NAME`).
- One that cannot be fixed now (no fixed version, or the fix is out of reach of a pin we depend on) is accepted
  only while an entry of setup/audit/exceptions.toml names it (its id or an alias) with a reason, the date it was
  added and a `review_by` date; past that date it fails again. An entry that matches nothing is reported as stale.
- A package the advisory service could not answer for is listed as not audited; with AUDIT_STRICT=1 that fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Exception_:
    id: str
    package: str
    reason: str
    date: dt.date
    review_by: dt.date


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audited: int = 0
    not_audited: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def load_exceptions(path: Path) -> list[Exception_]:
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    entries = []
    for number, entry in enumerate(data.get("exception", []), start=1):
        missing = [key for key in ("id", "package", "reason", "date", "review_by") if not entry.get(key)]
        if missing:
            raise ValueError(f"{path}: exception #{number} lacks {', '.join(missing)}")
        for key in ("date", "review_by"):
            if not isinstance(entry[key], dt.date):
                raise ValueError(f"{path}: exception #{number}: {key} must be a date (YYYY-MM-DD), got {entry[key]!r}")
        entries.append(Exception_(**{key: entry[key] for key in ("id", "package", "reason", "date", "review_by")}))
    return entries


def judge(report: dict[str, Any], exceptions: list[Exception_], today: dt.date, *, strict: bool = False) -> Verdict:
    verdict = Verdict()
    used: set[str] = set()
    audited_packages: set[str] = set()
    for dependency in report.get("dependencies", []):
        name, version = dependency["name"], dependency.get("version", "?")
        if "skip_reason" in dependency:
            verdict.not_audited.append(name)
            continue
        verdict.audited += 1
        audited_packages.add(name.lower())
        for vuln in dependency.get("vulns", []):
            ids = {vuln["id"], *vuln.get("aliases", [])}
            fixes = ", ".join(vuln.get("fix_versions", []))
            exception = next(
                (e for e in exceptions if e.id in ids and e.package.lower() == name.lower()),
                None,
            )
            if exception is not None:
                used.add(exception.id)
                if exception.review_by < today:
                    verdict.failures.append(
                        f"{name} {version}: {vuln['id']}: its exception expired on {exception.review_by}; "
                        f"upgrade{' to ' + fixes if fixes else ''}, or review it and move review_by"
                    )
                else:
                    verdict.accepted.append(
                        f"{name} {version}: {vuln['id']} (until {exception.review_by}: {exception.reason})"
                    )
            elif fixes:
                verdict.failures.append(
                    f"{name} {version}: {vuln['id']} is fixed in {fixes}: "
                    f".deps/uv/bin/uv lock --upgrade-package {name} (or add a dated exception saying why not)"
                )
            else:
                verdict.failures.append(
                    f"{name} {version}: {vuln['id']} has no fixed version: add it to setup/audit/exceptions.toml "
                    "with a reason and a review_by date"
                )
    for exception in exceptions:
        if exception.id not in used and exception.package.lower() in audited_packages:
            verdict.warnings.append(
                f"stale exception {exception.id} ({exception.package}): no longer reported, remove it"
            )
    if verdict.not_audited:
        message = (
            f"{len(verdict.not_audited)} package(s) not audited (the advisory service had no answer for them): "
            + ", ".join(sorted(verdict.not_audited)[:10])
            + (" ..." if len(verdict.not_audited) > 10 else "")
        )
        (verdict.failures if strict else verdict.warnings).append(message)
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pip-audit --format json output")
    parser.add_argument("exceptions", type=Path)
    args = parser.parse_args()
    try:
        report = json.loads(args.report.read_text())
        exceptions = load_exceptions(args.exceptions)
    except (OSError, ValueError) as error:
        print(f"audit: {error}", file=sys.stderr)  # noqa: T201
        return 2
    verdict = judge(report, exceptions, dt.datetime.now(dt.UTC).date(), strict=os.environ.get("AUDIT_STRICT") == "1")
    for line in verdict.accepted:
        print(f"audit: accepted {line}")  # noqa: T201
    for line in verdict.warnings:
        print(f"audit: warning: {line}")  # noqa: T201
    for line in verdict.failures:
        print(f"audit: FAIL {line}", file=sys.stderr)  # noqa: T201
    print(  # noqa: T201
        f"audit: {verdict.audited} packages audited, {len(verdict.accepted)} accepted by dated exceptions, "
        f"{len(verdict.failures)} failing"
    )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
