"""Groups that own kiosks (teachers see only their groups' lessons) and an append-only access log.

A group is a school or a class. A kiosk belongs to at most one group (``kiosks.group_id``; NULL = none,
seen by admins only); a teacher may be in several (``group_members``). Teachers that existed before this
step are in no group, so they see nothing until an admin assigns them one: safer than seeing everything.

``access_log`` records who read or exported children's words and every admin change. Append-only is
enforced by the database itself, not only by the companion's code: UPDATE is always refused, DELETE only
of rows older than a cutoff that the retention job declares inside its own transaction (PostgreSQL: the
transaction-local setting ``stella.access_log_cutoff``; SQLite: a row in ``access_log_purge``, which the job
inserts and removes again in the same transaction). Anyone who can run SQL as the database owner can still
drop the triggers: the guard stops mistakes and casual edits, a district's database permissions do the rest.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 6
NAME = "groups and access log"

PG_GUARD = """
CREATE OR REPLACE FUNCTION stella_access_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff TEXT := current_setting('stella.access_log_cutoff', true);
BEGIN
    IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND cutoff <> '' THEN
        IF OLD.at < cutoff::DOUBLE PRECISION THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION USING MESSAGE = 'access_log is append-only (' || TG_OP || ' refused)';
END
$$
"""

SQLITE_GUARDS = (
    "CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log "
    "BEGIN SELECT RAISE(ABORT, 'access_log is append-only (UPDATE refused)'); END",
    "CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log "
    "WHEN NOT OLD.at < (SELECT COALESCE(MAX(cutoff), 0) FROM access_log_purge) "
    "BEGIN SELECT RAISE(ABORT, 'access_log is append-only (DELETE refused)'); END",
)


async def apply(q: Queries) -> None:
    serial = "BIGSERIAL PRIMARY KEY" if q.engine == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    for statement in (
        f"CREATE TABLE kiosk_groups (group_id {serial}, name TEXT NOT NULL UNIQUE, "
        "created_at DOUBLE PRECISION NOT NULL)",
        "ALTER TABLE kiosks ADD COLUMN group_id BIGINT",
        "CREATE INDEX kiosks_by_group ON kiosks (group_id)",
        "CREATE TABLE group_members (group_id BIGINT NOT NULL, username TEXT NOT NULL, "
        "PRIMARY KEY (group_id, username))",
        "CREATE INDEX group_members_by_user ON group_members (username)",
        # lessons: how many lessons' words the action read or exported (0 for admin changes).
        f"CREATE TABLE access_log (id {serial}, at DOUBLE PRECISION NOT NULL, username TEXT NOT NULL, "
        "action TEXT NOT NULL, subject TEXT NOT NULL, lessons INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX access_log_by_at ON access_log (at)",
        "CREATE INDEX access_log_by_user ON access_log (username, at)",
    ):
        await q.execute(statement)
    if q.engine == "postgresql":
        await q.execute(PG_GUARD)
        await q.execute("CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log "
                        "FOR EACH ROW EXECUTE FUNCTION stella_access_log_guard()")
        await q.execute("CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log "
                        "FOR EACH STATEMENT EXECUTE FUNCTION stella_access_log_guard()")
    else:
        await q.execute("CREATE TABLE access_log_purge (cutoff DOUBLE PRECISION NOT NULL)")
        for statement in SQLITE_GUARDS:
            await q.execute(statement)
