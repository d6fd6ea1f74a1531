-- The HTTP API's front door (issue 12): contributors authenticate with API keys, direct
-- uploads are issued as presigned S3 POST forms, and live status is pushed, not polled.

-- `contributors.id` (0001) is the contributor's name: the slug of uploads/<contributor>/.
-- It gets a check that it is one (the batcher's rule, ingest_batcher.keys), now that
-- contributors are also created by `ingest contributors create`.
ALTER TABLE contributors
    ADD CONSTRAINT contributors_id_is_a_slug CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$') NOT VALID;

-- API keys, stored hashed: sha256 of a 256-bit random key (high entropy: no salt or slow
-- hash needed). `prefix` is the start of the key, shown to identify it; a presented key is
-- found by its prefix and compared with its hash in constant time.
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    contributor_id  text NOT NULL REFERENCES contributors (id),
    prefix          text NOT NULL UNIQUE,
    hash            text NOT NULL,            -- hex sha256 of the whole key
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz
);
CREATE INDEX api_keys_contributor_idx ON api_keys (contributor_id);

-- An upload form the API issued (POST /v1/uploads): the key it lets the contributor write,
-- until when. Its id is the object's name (uploads/<contributor>/<id>.zip), so a client
-- follows its upload by this id before the object exists (the upload's own id is derived
-- from the object's ETag, known only once it is stored).
CREATE TABLE upload_forms (
    id              uuid PRIMARY KEY,
    contributor_id  text NOT NULL REFERENCES contributors (id),
    bucket          text NOT NULL,
    object_key      text NOT NULL,
    trace_id        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
-- (Uploads are found by key with the index of UNIQUE (bucket, object_key, etag).)

-- Live status (GET /v1/uploads/{id}/events): changes that no event or image outcome
-- announces are told on the channel the API listens to, with the upload's or the
-- product's id: an image's outcome, an upload's or a product's step.
CREATE FUNCTION ingest_progress_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingest_progress', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER uploads_progress AFTER INSERT OR UPDATE OF status, product_id ON uploads
    FOR EACH ROW EXECUTE FUNCTION ingest_progress_notify();
CREATE FUNCTION ingest_image_progress_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ingest_progress', NEW.product_id::text);  -- one per product at commit
    RETURN NULL;
END $$;
CREATE TRIGGER images_progress AFTER UPDATE OF status ON images
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ingest_image_progress_notify();
CREATE TRIGGER products_progress
    AFTER UPDATE OF status, completed_at, previewed_at, indexed_at ON products
    FOR EACH ROW EXECUTE FUNCTION ingest_progress_notify();
