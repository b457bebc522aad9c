-- The clinical topics of each event (docs: README, "Clinical topics"), as
-- `,topic,topic,` so that a poll filtering by a topic can match the column.
-- Events written before topics existed have none.
ALTER TABLE events ADD COLUMN topics TEXT NOT NULL DEFAULT '';
