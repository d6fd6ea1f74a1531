-- Outages, backlogs and re-uploads (issue 9).

-- An image failure that is not about the file (its render message was dead-lettered or
-- lost) can be undone: a later render, a redrive or the set sent again brings it back.
ALTER TABLE images ADD COLUMN failure_retryable boolean NOT NULL DEFAULT false;

-- A new version of a set retires the images it no longer has: the rows stay for history
-- (status `retired`, with the time), nothing shows or counts them, and their renditions
-- are deleted.
ALTER TYPE image_status ADD VALUE 'retired';
ALTER TABLE images ADD COLUMN retired_at timestamptz;
ALTER TABLE images DROP CONSTRAINT images_product_id_path_key;
ALTER TABLE images DROP CONSTRAINT images_product_id_content_hash_key;
CREATE UNIQUE INDEX images_active_path_idx ON images (product_id, path) WHERE retired_at IS NULL;
CREATE UNIQUE INDEX images_active_content_idx
    ON images (product_id, content_hash) WHERE retired_at IS NULL;
CREATE INDEX images_pending_idx ON images (product_id) WHERE status = 'pending';
-- The sweeper keeps an original while an active image still uses it.
CREATE INDEX images_original_key_idx ON images (original_key) WHERE retired_at IS NULL;

-- A product is the set stored at one key: a new version to the same key updates it.
-- upload_id stays the upload that created it; current_upload_id is the version shown.
ALTER TABLE products ADD COLUMN bucket text;
ALTER TABLE products ADD COLUMN object_key text;
ALTER TABLE products ADD COLUMN current_upload_id uuid REFERENCES uploads (id);
-- The last time one of its images finished: the safety net looks for progress, not age.
ALTER TABLE products ADD COLUMN progressed_at timestamptz NOT NULL DEFAULT now();
UPDATE products p
   SET bucket = u.bucket, object_key = u.object_key, current_upload_id = u.id,
       progressed_at = coalesce(p.completed_at, p.created_at)
  FROM uploads u WHERE u.id = p.upload_id;
ALTER TABLE products ALTER COLUMN bucket SET NOT NULL;
ALTER TABLE products ALTER COLUMN object_key SET NOT NULL;
ALTER TABLE products ALTER COLUMN current_upload_id SET NOT NULL;
CREATE UNIQUE INDEX products_object_idx ON products (bucket, object_key);

-- An upload is one PUT of one object version. It creates a product, updates one (a new
-- version at the same key), repeats one (the same bytes again: `duplicate`), or arrives
-- after a newer version of its key was applied (`superseded`).
ALTER TYPE upload_status ADD VALUE 'duplicate';
ALTER TYPE upload_status ADD VALUE 'superseded';
ALTER TABLE uploads ADD COLUMN archive_sha256 text;
ALTER TABLE uploads ADD COLUMN product_id uuid REFERENCES products (id);
ALTER TABLE uploads ADD COLUMN duplicate_of uuid REFERENCES uploads (id);
ALTER TABLE uploads ADD COLUMN replaced_by uuid REFERENCES uploads (id);
UPDATE uploads u SET product_id = p.id FROM products p WHERE p.upload_id = u.id;
CREATE INDEX uploads_archive_idx ON uploads (contributor_id, archive_sha256);

-- Mosaic currency: a family's revision moves whenever the ready images of one of its
-- complete products change (a product completes, an image comes back, a version lands).
-- A mosaic records the revision it sampled; an equal revision needs no rebuild.
ALTER TABLE families ADD COLUMN revision bigint NOT NULL DEFAULT 0;
ALTER TABLE family_previews ADD COLUMN revision bigint NOT NULL DEFAULT -1;
ALTER TABLE family_previews DROP COLUMN complete_products;

-- Objects nothing refers to any more, deleted by the sweeper once due. Each kind is
-- checked again when swept, so an object that is wanted again is kept:
--   renditions  every object under `key` (a prefix): kept if image_id is ready again
--   original    one object: kept while an active image has it as its original_key
--   mosaic      one object: kept while a family preview points at it
CREATE TABLE object_garbage (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('renditions', 'original', 'mosaic')),
    bucket      text NOT NULL,
    key         text NOT NULL,
    image_id    uuid,
    reason      text NOT NULL,
    due_at      timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX object_garbage_due_idx ON object_garbage (due_at);

-- Periodic maintenance (reconciliation, sweeping) that many processes may host: the one
-- that claims a task's row runs it; the others skip until the interval has passed.
CREATE TABLE maintenance_runs (
    task        text PRIMARY KEY,
    claimed_at  timestamptz NOT NULL,
    finished_at timestamptz,
    summary     jsonb
);
