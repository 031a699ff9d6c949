"""lookup-user: every row about one user across all tables, exported as one JSON file (a data-subject access request).

The raw id is given on the command line (or read from a variable with --user-env, which keeps it out of the process
list and shell history); it is pseudonymised with the lake's key to find the user's rows and is never logged.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from shopmine.io import fs
from shopmine.jobrun import RunContext, ShopmineError, base_parser, run_job
from shopmine.governance.privacy import Privacy, check_key
from shopmine.governance.subjects import Subject, lookup

log = logging.getLogger("shopmine.lookup_user")


def subject_arg(args) -> str:
    """The raw id from --user or from the variable named by --user-env (shared with forget-user)."""
    import os

    raw = args.user if args.user is not None else os.environ.get(args.user_env or "", "")
    if not raw or not raw.strip():
        raise ShopmineError("give the user's raw id: --user ID, or --user-env VAR naming a variable that holds it")
    return raw.strip()


def add_subject_args(p) -> None:
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="the user's raw id as the source wrote it (e.g. 17850 or u123)")
    who.add_argument("--user-env", help="the name of an environment variable holding the raw id")


def body(ctx: RunContext, args) -> None:
    privacy = Privacy.from_settings(ctx.settings)
    check_key(ctx.lake, privacy, reprocess=False)
    subject = Subject.of(subject_arg(args), privacy)
    found = lookup(ctx.lake, subject, privacy)
    now = datetime.now(timezone.utc)
    doc = {
        "generated_at": now.isoformat(),
        "lake": ctx.lake.root,
        "pseudonymised": privacy.pseudonymising,
        "user_ids_searched": subject.pseudonyms,
        "rows": {name: len(rows) for name, rows in found.items()},
        "tables": found,
    }
    text = json.dumps(doc, indent=1, default=str, ensure_ascii=False)
    out = args.out or f"{ctx.lake.root}/_exports/lookup-{ctx.run_id}.json"  # the name never carries the id
    fs.write_text(ctx.spark, out, text)
    total = sum(doc["rows"].values())
    log.info("found %d row(s) in %d table(s): %s; written to %s", total, len(found),
             ", ".join(f"{k} {v}" for k, v in doc["rows"].items()) or "none", out)
    ctx.count(rows_read=total, rows_written=total)
    if not found:
        ctx.message = "no rows about this user in any table"


def parser():
    p = base_parser("lookup-user")
    add_subject_args(p)
    p.add_argument("--out", help="where to write the JSON (default <lake>/_exports/lookup-<token>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("lookup-user", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
