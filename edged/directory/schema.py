"""The directory's schema: its migrations, in order (``Db.migrate``), never edited once released.

1. the initial schema; 2. cards for verify-mode claims (the card key is created with it, see
``Keys.seed``); 3. the directory version: one counter that every change to groups, persons, faces,
face lists, dynamic groups and cards raises in its own transaction (triggers), and that transient
face IDs, keys and the audit log leave alone; 4. the owner of each face ID (``client``: who asked
for it, for the per-client quota of live face IDs), indexed with its expiry; 5. liveness sessions and
their attempts (``edged.directory.liveness``; outside the directory version, like face IDs).
"""

from __future__ import annotations

from edged.directory.db import Migration

CARDS_MIGRATION = 2
"""The migration that adds the cards table; the card key is created (wrapped by the KEK) with it."""

VERSIONED_TABLES = (
    "person_groups",
    "persons",
    "faces",
    "face_lists",
    "dynamic_groups",
    "dynamic_members",
    "cards",
)
"""Every change to a row of these raises the directory version."""

_INITIAL: Migration = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE data_keys (
        key_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL UNIQUE,
        wrapped BLOB NOT NULL
    )""",
    """CREATE TABLE person_groups (
        group_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('group', 'large')),
        name TEXT NOT NULL,
        user_data TEXT,
        recognition_model TEXT NOT NULL,
        train_status TEXT NOT NULL DEFAULT 'notstarted',
        train_message TEXT,
        trained_at REAL,
        created REAL NOT NULL,
        modified REAL NOT NULL
    )""",
    """CREATE TABLE persons (
        person_id TEXT PRIMARY KEY,
        group_id TEXT REFERENCES person_groups (group_id) ON DELETE CASCADE,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        name BLOB NOT NULL,
        user_data BLOB,
        created REAL NOT NULL
    )""",
    "CREATE INDEX persons_by_group ON persons (group_id, person_id)",
    """CREATE TABLE face_lists (
        list_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('list', 'large')),
        name TEXT NOT NULL,
        user_data TEXT,
        recognition_model TEXT NOT NULL,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        created REAL NOT NULL
    )""",
    """CREATE TABLE faces (
        face_id TEXT PRIMARY KEY,
        person_id TEXT REFERENCES persons (person_id) ON DELETE CASCADE,
        list_id TEXT REFERENCES face_lists (list_id) ON DELETE CASCADE,
        template BLOB NOT NULL,
        model_id TEXT NOT NULL,
        user_data BLOB,
        quality TEXT,
        created REAL NOT NULL,
        CHECK ((person_id IS NULL) != (list_id IS NULL))
    )""",
    "CREATE INDEX faces_by_person ON faces (person_id)",
    "CREATE INDEX faces_by_list ON faces (list_id)",
    """CREATE TABLE dynamic_groups (
        dgroup_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        user_data TEXT,
        created REAL NOT NULL
    )""",
    """CREATE TABLE dynamic_members (
        dgroup_id TEXT NOT NULL REFERENCES dynamic_groups (dgroup_id) ON DELETE CASCADE,
        person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
        PRIMARY KEY (dgroup_id, person_id)
    )""",
    """CREATE TABLE transient_faces (
        face_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        template BLOB NOT NULL,
        model_id TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL
    )""",
    "CREATE INDEX transient_by_expiry ON transient_faces (expires)",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        operation TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        targets TEXT NOT NULL,
        result TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
)

_CARDS: Migration = (
    # keyed by HMAC-SHA256 of the card number (never the number)
    """CREATE TABLE cards (
        card_hash BLOB PRIMARY KEY,
        person_id TEXT NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
        created REAL NOT NULL
    )""",
    "CREATE INDEX cards_by_person ON cards (person_id)",
)

_DIRECTORY_VERSION: Migration = (
    "CREATE TABLE directory_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    "INSERT INTO directory_version VALUES (1, 0)",
    *(
        f"CREATE TRIGGER {table}_{event.lower()}_version AFTER {event} ON {table}"
        " BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END"
        for table in VERSIONED_TABLES
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
)

_FACE_ID_OWNER: Migration = (
    # NULL for the face IDs of an older edged: they count against the global cap only
    "ALTER TABLE transient_faces ADD COLUMN client TEXT",
    "CREATE INDEX transient_by_client ON transient_faces (client, expires)",
)

_LIVENESS_SESSIONS: Migration = (
    # the token only as HMAC-SHA256 under the session's data key; the reference template sealed with it
    """CREATE TABLE liveness_sessions (
        session_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL REFERENCES data_keys (key_id),
        token_hash BLOB NOT NULL,
        token_ttl INTEGER NOT NULL,
        token_expires REAL NOT NULL,
        device_correlation_id TEXT,
        mode TEXT NOT NULL CHECK (mode IN ('passive', 'passive-active')),
        max_attempts INTEGER NOT NULL,
        reference BLOB,
        model_id TEXT,
        challenge TEXT,
        created REAL NOT NULL,
        expires REAL NOT NULL
    )""",
    "CREATE INDEX liveness_sessions_by_expiry ON liveness_sessions (expires)",
    # outcome: JSON of decision, score, cues, decidedBy, frames, challenge, verify (no image, no template)
    """CREATE TABLE liveness_attempts (
        session_id TEXT NOT NULL REFERENCES liveness_sessions (session_id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        time REAL NOT NULL,
        outcome TEXT,
        error TEXT,
        PRIMARY KEY (session_id, attempt)
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    _INITIAL,
    _CARDS,
    _DIRECTORY_VERSION,
    _FACE_ID_OWNER,
    _LIVENESS_SESSIONS,
)
