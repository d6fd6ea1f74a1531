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
