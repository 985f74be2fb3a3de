"""PostgreSQL: a rate-limit slot reserved in one round trip.

Why a stored function: reserving a slot is lock, prune, count and insert inside one transaction. Sent as
statements that is five round trips (BEGIN, the advisory lock, DELETE, INSERT, COMMIT), and at a class
change their client-side cost was most of the companion's CPU per token. Called as one autocommitted
``SELECT``, the function's transaction holds the bucket's advisory lock until it commits; being
``VOLATILE``, each statement inside takes a fresh snapshot, so the count sees every slot committed by the
lock's previous holder. SQLite needs nothing here: its ``BEGIN IMMEDIATE`` path stays as it was.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 5
NAME = "reserve function"

RESERVE_FUNCTION = """
CREATE OR REPLACE FUNCTION stella_reserve(p_bucket TEXT, p_now DOUBLE PRECISION, p_window DOUBLE PRECISION,
                                          p_limit INTEGER)
RETURNS TABLE (event_id BIGINT, oldest DOUBLE PRECISION) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    counted INTEGER;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_bucket));
    DELETE FROM rate_events WHERE bucket = p_bucket AND at <= p_now - p_window;
    SELECT COUNT(*) INTO counted FROM rate_events WHERE bucket = p_bucket;
    IF counted < p_limit THEN
        INSERT INTO rate_events (bucket, at) VALUES (p_bucket, p_now) RETURNING id INTO event_id;
        oldest := NULL;
    ELSE
        event_id := NULL;
        SELECT MIN(at) INTO oldest FROM rate_events WHERE bucket = p_bucket;
    END IF;
    RETURN NEXT;
END
$$
"""


async def apply(q: Queries) -> None:
    if q.engine == "postgresql":
        await q.execute(RESERVE_FUNCTION)
