"""The PostgreSQL job database's schema: versioned migrations, applied in order at open (`app.store.postgres`).

Each migration is one transaction (PostgreSQL's DDL is transactional) that also records its number in
`schema_version`; the gateway that opens the database first applies what is missing while it holds an advisory
lock, so replicas starting together never apply one twice. Never edit a released migration: add the next number.

JSON values are `json` (kept as written: exec output may hold `\\u0000`, which `jsonb` refuses), except checkpoints,
which are merged key by key (`jsonb`). Times are `timestamptz`; leases are epoch seconds (`double precision`) as the
engine computes them.

Migration 2 holds what else a replica needs: tokens (their record as JSON, the secret only as its sha256), the ids
of tokens imported once from a tokens file, one-time tickets (sha256 of the ticket), remotes added at run time
(the client key encrypted with a key kept outside the database), and a version per kind of state that every write
bumps (`state_versions`), which replicas poll as a fallback to LISTEN/NOTIFY.

Migration 3 marks a job whose cancel was asked of another replica than its owner (`cancel_requested`): the owner
hears of it by a notification on the `jobs` channel (the job's id), or at the latest when it renews its leases.

Migration 4 holds what a request reserves across replicas before its job exists: a name being created
(`name_reservations`, one row per remote, project, kind and name: its owner, the job once submitted, an expiry) and
a place under a token's cap of unfinished jobs (`job_slots`). A reservation holds while its job is unfinished, or,
before the job exists, while its owner's heartbeat (`replicas`) and its expiry last: a dead replica's lapse.

Migration 5 holds the messages of job streams (`job_messages`), so that any replica serves the stream of a job
another runs: the owner writes each message (progress merged, at most one a second) and notifies the
`job_messages` channel with `<job_id>:<seq>`; the rows go with their job, or some minutes after it ended. `body` is
`{"job": ..., "data": ...}` as `json` (output may hold `\\u0000`).

Migration 6 holds the web console's sessions (`ui_sessions`, `app.store.sessions`): the sha256 of the session id
(never the id), the token it stands for (by id), its CSRF token and its expiry, so that every replica knows them.
"""

from __future__ import annotations

MIGRATION_LOCK = 0x6C7864677701
"""The `pg_advisory_lock` key held while migrations are applied (any constant unique to this schema)."""

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        position     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           text NOT NULL UNIQUE,
        kind         text NOT NULL,
        status       text NOT NULL,
        remote       text,
        project      text,
        resource     text,
        requested_by text,
        request_id   text,
        token_id     text,
        created_at   timestamptz NOT NULL,
        started_at   timestamptz,
        finished_at  timestamptz,
        progress     json NOT NULL DEFAULT '{}',
        operations   json NOT NULL DEFAULT '[]',
        result       json,
        error        json,
        params       json NOT NULL DEFAULT '{}',
        checkpoints  jsonb NOT NULL DEFAULT '{}',
        cleanup      json,
        has_output   boolean NOT NULL DEFAULT false,
        seq          bigint NOT NULL DEFAULT 0,
        owner_id     text,
        lease_until  double precision
    );
    CREATE INDEX jobs_status ON jobs (status, position);
    CREATE INDEX jobs_kind ON jobs (kind, position);
    CREATE INDEX jobs_resource ON jobs (resource, position);
    CREATE INDEX jobs_scope ON jobs (project, remote, position);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX jobs_unfinished ON jobs (lease_until, position) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_owned ON jobs (owner_id) WHERE status IN ('queued', 'running');
    CREATE INDEX jobs_cleanup ON jobs (position) WHERE cleanup IS NOT NULL;
    CREATE TABLE job_outputs (
        job_id       text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        output       json NOT NULL
    );
    CREATE TABLE idempotency (
        scope        text NOT NULL,
        key          text NOT NULL,
        fingerprint  text NOT NULL,
        job_id       text,
        created_at   double precision NOT NULL,
        expires_at   double precision NOT NULL,
        owner_id     text,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_expires ON idempotency (expires_at);
    CREATE TABLE audit (
        position     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time         timestamptz NOT NULL,
        token        text,
        remote       text,
        project      text,
        method       text NOT NULL,
        path         text NOT NULL,
        resource     text,
        job_id       text,
        status       integer NOT NULL,
        outcome      text NOT NULL,
        request_id   text
    );
    CREATE INDEX audit_time ON audit (time);
    CREATE TABLE replicas (
        owner_id     text PRIMARY KEY,
        alive_until  double precision NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now()
    );
    """,
    2: """
    CREATE TABLE tokens (
        name          text PRIMARY KEY,
        id            text NOT NULL UNIQUE,
        secret_sha256 text NOT NULL UNIQUE,
        record        json NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE token_imports (
        id           text PRIMARY KEY,
        imported_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE tickets (
        ticket_sha256 text PRIMARY KEY,
        token_id      text NOT NULL,
        authenticated boolean NOT NULL,
        expires_at    double precision NOT NULL
    );
    CREATE INDEX tickets_expires ON tickets (expires_at);
    CREATE TABLE remotes (
        name         text PRIMARY KEY,
        spec         json NOT NULL,
        client_cert  text NOT NULL,
        client_key   bytea NOT NULL,
        server_cert  text,
        created_at   timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE state_versions (
        name         text PRIMARY KEY,
        version      bigint NOT NULL
    );
    INSERT INTO state_versions (name, version) VALUES ('tokens', 0), ('remotes', 0);
    """,
    3: """
    ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
    """,
    4: """
    CREATE TABLE name_reservations (
        remote       text NOT NULL,
        project      text NOT NULL,
        kind         text NOT NULL,
        name         text NOT NULL,
        owner_id     text NOT NULL,
        job_id       text,
        expires_at   double precision NOT NULL,
        PRIMARY KEY (remote, project, kind, name)
    );
    CREATE INDEX name_reservations_expires ON name_reservations (expires_at);
    CREATE TABLE job_slots (
        id           text PRIMARY KEY,
        token_id     text NOT NULL,
        owner_id     text NOT NULL,
        expires_at   double precision NOT NULL
    );
    CREATE INDEX job_slots_token ON job_slots (token_id);
    CREATE INDEX jobs_token_unfinished ON jobs (token_id) WHERE status IN ('queued', 'running');
    """,
    5: """
    CREATE TABLE job_messages (
        job_id       text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq          bigint NOT NULL,
        type         text NOT NULL,
        body         json NOT NULL,
        at           timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_id, seq)
    );
    """,
    6: """
    CREATE TABLE ui_sessions (
        id_hash      text PRIMARY KEY,
        token_id     text NOT NULL,
        csrf         text NOT NULL,
        created_at   double precision NOT NULL,
        expires_at   double precision NOT NULL
    );
    CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
    CREATE INDEX ui_sessions_token ON ui_sessions (token_id);
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)
