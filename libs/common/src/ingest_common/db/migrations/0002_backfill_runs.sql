-- Checkpoints of `ingest backfill`. A run is one selection (filter, target sizes and formats,
-- render profile); rerunning the same selection resumes its unfinished run from
-- last_image_id instead of scanning the images already done.
CREATE TABLE backfill_runs (
    id              bigserial PRIMARY KEY,
    selection       text NOT NULL,            -- canonical JSON of the filter, target and profile
    last_image_id   uuid,                     -- every selected image up to this id is done or failed
    done            bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX backfill_runs_open_idx ON backfill_runs (selection) WHERE finished_at IS NULL;
