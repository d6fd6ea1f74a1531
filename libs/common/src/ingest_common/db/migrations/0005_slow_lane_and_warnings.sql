-- What the renderer left out of an image that was rendered anyway (an embedded raster it
-- declined, ...): shown with the image by `ingest status`, in the contributor's words.
ALTER TABLE images ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]';
