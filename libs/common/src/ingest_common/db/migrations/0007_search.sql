-- Search a marketplace would ship (issue 12): icons as well as sets, typos, hyphens,
-- prefixes, licenses, facets and filters (ingest_common.search).
--
-- Existing databases: the sets already indexed stay searchable (their new columns are
-- filled below) but have no icons and the older weights until reindexed: run
-- `ingest reindex` once after this migration (the indexer also reindexes a product on its
-- next change, since its document now has one more field).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The document gains a digest of its searchable icons (the ready images: id, path, title,
-- tags, in order), so that the indexer sees an icon change as a change of the document.
CREATE OR REPLACE VIEW product_documents AS
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
         ORDER BY i.position, (r->>'width')::int DESC LIMIT 1) AS cover_key,
       (SELECT md5(string_agg(concat_ws(E'\x1f', i.id::text, i.path, i.title,
                                        array_to_string(i.tags, E'\x1e')),
                              E'\n' ORDER BY i.position, i.id))
          FROM images i WHERE i.product_id = p.id AND i.status = 'ready') AS icons_digest
FROM products p
JOIN families f ON f.id = p.family_id;

-- A set's facets and filters, beside its document.
ALTER TABLE search_documents
    ADD COLUMN contributor_id text,
    ADD COLUMN license text,
    ADD COLUMN product_type text;
UPDATE search_documents sd
   SET contributor_id = p.contributor_id, license = p.license, product_type = p.product_type::text
  FROM products p
 WHERE p.id = sd.product_id;
ALTER TABLE search_documents
    ALTER COLUMN contributor_id SET NOT NULL,
    ALTER COLUMN license SET NOT NULL,
    ALTER COLUMN product_type SET NOT NULL;
CREATE INDEX search_documents_family_idx ON search_documents (family);
CREATE INDEX search_documents_contributor_idx ON search_documents (contributor_id);
CREATE INDEX search_documents_license_idx ON search_documents (license);

-- One row per searchable icon: a ready image of a searchable set. Written with its set's
-- document, removed with it.
CREATE TABLE search_icons (
    image_id        uuid PRIMARY KEY REFERENCES images (id),
    product_id      uuid NOT NULL REFERENCES search_documents (product_id) ON DELETE CASCADE,
    position        integer NOT NULL,
    title           text NOT NULL,
    path            text NOT NULL,
    family          text NOT NULL,
    contributor_id  text NOT NULL,
    license         text NOT NULL,
    product_type    text NOT NULL,
    search_vector   tsvector NOT NULL,
    indexed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_icons_product_idx ON search_icons (product_id);
CREATE INDEX search_icons_vector_idx ON search_icons USING gin (search_vector);
CREATE INDEX search_icons_family_idx ON search_icons (family);
CREATE INDEX search_icons_contributor_idx ON search_icons (contributor_id);
CREATE INDEX search_icons_license_idx ON search_icons (license);

-- The vocabulary a misspelt query word is matched against (trigram similarity), and whose
-- starts tell a word being typed from a typo. Folded words of everything indexed; only
-- added to (a word no longer indexed matches nothing): `ingest reindex` rebuilds it.
CREATE TABLE search_words (
    word            text COLLATE "C" PRIMARY KEY     -- "C": the primary key serves LIKE 'pre%'
);
-- GiST, not GIN: it gives the nearest words in order (ORDER BY word <-> 'typo' LIMIT n).
CREATE INDEX search_words_trigram_idx ON search_words USING gist (word gist_trgm_ops);
INSERT INTO search_words (word)
SELECT DISTINCT w
  FROM products p,
       regexp_split_to_table(lower(concat_ws(' ', p.title, p.description, p.license,
                                             array_to_string(p.tags, ' '))),
                             '[^[:alnum:]]+') w
 WHERE length(w) >= 2 AND w !~ '^[0-9]+$'
ON CONFLICT DO NOTHING;
