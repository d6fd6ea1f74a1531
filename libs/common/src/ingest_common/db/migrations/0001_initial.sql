-- The data model of ingest. Ids are UUIDs so that services can name rows before they exist
-- (an upload's id is derived from its S3 object, see ingest_common.ids).

CREATE TABLE contributors (
    id          text PRIMARY KEY,            -- from the S3 key prefix uploads/<contributor>/
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE families (
    id              uuid PRIMARY KEY,
    slug            text NOT NULL UNIQUE,     -- a family belongs to the contributor who made it
    name            text NOT NULL,
    contributor_id  text NOT NULL REFERENCES contributors (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE upload_status AS ENUM ('received', 'rejected', 'processing', 'ready', 'failed');

CREATE TABLE uploads (
    id              uuid PRIMARY KEY,         -- uuid5 of bucket/key#etag: one upload per object version
    bucket          text NOT NULL,
    object_key      text NOT NULL,
    etag            text NOT NULL,
    contributor_id  text REFERENCES contributors (id),
    status          upload_status NOT NULL DEFAULT 'received',
    error           text,                     -- why the whole set was rejected
    file_errors     jsonb NOT NULL DEFAULT '[]',  -- [{"path": ..., "reason": ...}] found by the batcher
    traceparent     text,
    trace_id        text,
    object_size     bigint,
    uploaded_at     timestamptz,              -- S3 event time
    received_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz,              -- every render message sent
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (bucket, object_key, etag)
);

CREATE TYPE product_type AS ENUM ('icon_set', 'illustration_set');
CREATE TYPE product_status AS ENUM ('processing', 'ready', 'failed');

CREATE TABLE products (
    id              uuid PRIMARY KEY,
    upload_id       uuid NOT NULL UNIQUE REFERENCES uploads (id),
    family_id       uuid NOT NULL REFERENCES families (id),
    contributor_id  text NOT NULL REFERENCES contributors (id),
    product_type    product_type NOT NULL,
    title           text NOT NULL,
    description     text NOT NULL DEFAULT '',
    tags            text[] NOT NULL DEFAULT '{}',
    license         text NOT NULL,
    status          product_status NOT NULL DEFAULT 'processing',
    -- completion is counted in the same transaction as each image's outcome, so the
    -- moment the last image lands is known without polling
    image_count     integer NOT NULL CHECK (image_count > 0),
    images_ready    integer NOT NULL DEFAULT 0,
    images_failed   integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    ready_notified_at timestamptz,            -- product-ready sent to q.preview and q.index
    previewed_at    timestamptz,
    indexed_at      timestamptz,
    CHECK (images_ready + images_failed <= image_count)
);
CREATE INDEX products_family_idx ON products (family_id);

CREATE TYPE image_status AS ENUM ('pending', 'ready', 'failed');

CREATE TABLE images (
    id              uuid PRIMARY KEY,
    product_id      uuid NOT NULL REFERENCES products (id),
    position        integer NOT NULL,
    path            text NOT NULL,            -- the file's name in the ZIP
    title           text NOT NULL,
    tags            text[] NOT NULL DEFAULT '{}',
    content_hash    text NOT NULL,            -- sha256 of the SVG
    byte_size       integer NOT NULL,
    original_key    text NOT NULL,
    status          image_status NOT NULL DEFAULT 'pending',
    failure_reason  text,
    width           integer,                  -- the SVG's own size
    height          integer,
    renditions      jsonb NOT NULL DEFAULT '[]',  -- [{"width","height","format","key","bytes"}]
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (product_id, path),
    UNIQUE (product_id, content_hash)
);
CREATE INDEX images_ready_by_product_idx ON images (product_id) WHERE status = 'ready';

CREATE TABLE family_previews (
    family_id       uuid PRIMARY KEY REFERENCES families (id),
    png_key         text NOT NULL,
    webp_key        text NOT NULL,
    width           integer NOT NULL,
    height          integer NOT NULL,
    image_ids       uuid[] NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- What the search backend indexes: one row per product, built from the tables above.
CREATE VIEW product_documents AS
SELECT p.id AS product_id,
       p.title,
       p.description,
       p.tags,
       p.product_type::text AS product_type,
       p.license,
       p.contributor_id,
       f.slug AS family,
       f.name AS family_name,
       p.images_ready,
       array(SELECT i.title FROM images i
             WHERE i.product_id = p.id AND i.status = 'ready' ORDER BY i.position) AS image_titles,
       array(SELECT DISTINCT t FROM images i, unnest(i.tags) t
             WHERE i.product_id = p.id AND i.status = 'ready' ORDER BY t) AS image_tags,
       (SELECT r->>'key' FROM images i, jsonb_array_elements(i.renditions) r
         WHERE i.product_id = p.id AND i.status = 'ready' AND r->>'format' = 'png'
         ORDER BY i.position, (r->>'width')::int DESC LIMIT 1) AS cover_key
FROM products p
JOIN families f ON f.id = p.family_id;

-- The PostgreSQL full-text backend of search.
CREATE TABLE search_documents (
    product_id      uuid PRIMARY KEY REFERENCES products (id),
    title           text NOT NULL,
    family          text NOT NULL,
    document        jsonb NOT NULL,
    search_vector   tsvector NOT NULL,
    indexed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_documents_vector_idx ON search_documents USING gin (search_vector);
