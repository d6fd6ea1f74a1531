-- How many of the family's products were complete in the snapshot a mosaic was sampled from.
-- A product only ever becomes complete, so when this equals the family's count of complete
-- products now, the mosaic already drew from every one of them and a product-ready message
-- (a later set of a burst, or a redelivery) need not rebuild it. 0 for older rows: rebuilt.
ALTER TABLE family_previews ADD COLUMN complete_products integer NOT NULL DEFAULT 0;
