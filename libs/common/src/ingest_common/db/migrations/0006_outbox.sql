-- The transactional outbox of domain events (ingest_common.events, ingest_common.outbox):
-- each row commits with the state change it reports, and is published afterwards, in id
-- order, to the events topic and bus. `id` is the event's `sequence`.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    type         text NOT NULL,
    subject      text NOT NULL,
    envelope     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- The publisher LISTENs on ingest_outbox: each statement that writes events wakes it, at
-- commit (a rolled-back event wakes nobody), without a round trip of the writer's own.
CREATE FUNCTION ingest_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingest_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_written AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_outbox_notify();
