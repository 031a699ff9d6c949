"""forget-user: erase one user from every table (Delta DELETE), VACUUM the files that held the rows, audit it.

The audit row in ops.erasures stores a keyed token, never the id. Models trained on the user's data are rebuilt by the
next run of the training jobs (their inputs changed, so they are not no-ops); MLflow copies of old models are not
touched (see docs/privacy.md).
"""

from __future__ import annotations

import logging
import sys
import uuid
from datetime import datetime, timezone

from jobs.lookup_user import add_subject_args, subject_arg
from shopmine.io.tables import OPS_ERASURES
from shopmine.jobrun import RunContext, base_parser, run_job
from shopmine.logs import step
from shopmine.governance.privacy import Privacy, check_key, erasure_token
from shopmine.governance.subjects import Subject, erase, vacuum

log = logging.getLogger("shopmine.forget_user")


def body(ctx: RunContext, args) -> None:
    privacy = Privacy.from_settings(ctx.settings)
    check_key(ctx.lake, privacy, reprocess=False)
    raw = subject_arg(args)
    subject = Subject.of(raw, privacy)
    retention = ctx.settings.privacy.erasure.vacuum_retention_hours
    with step(log, "delete the user's rows from every table") as info:
        deleted, versions = erase(ctx.lake, subject)
        info["rows"] = sum(deleted.values())
    vacuumed = False
    if deleted and not args.no_vacuum:
        with step(log, f"vacuum {len(deleted)} table(s), retaining {retention:g} hours"):
            vacuum(ctx.lake, sorted(deleted), retention)
        vacuumed = True
    # Without a key any hash of the id could be reversed by trying ids: the audit then gets a random token only.
    token = (erasure_token(subject.raw_forms[0], privacy.pseudonym_key) if privacy.pseudonym_key
             else "unkeyed-" + uuid.uuid4().hex)
    row = (uuid.uuid4().hex, token, datetime.now(timezone.utc), deleted, versions, float(retention), vacuumed,
           ctx.run_id)
    ctx.lake.append(ctx.spark.createDataFrame([row], OPS_ERASURES.schema), OPS_ERASURES.name)
    for name in deleted:
        ctx.outputs[name] = versions[name]
    ctx.count(rows_written=sum(deleted.values()), tables=len(deleted))
    log.info("erased %d row(s) from %d table(s)%s", sum(deleted.values()), len(deleted),
             "" if deleted else " (the user was in no table)")


def parser():
    p = base_parser("forget-user")
    add_subject_args(p)
    p.add_argument("--no-vacuum", action="store_true",
                   help="only delete (the rows stay in older files until the next VACUUM, e.g. by maintain)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_job("forget-user", argv, parser(), body)


if __name__ == "__main__":
    sys.exit(main())
