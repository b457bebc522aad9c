-- Why an endpoint's filter last stopped without an answer (it ran out of its
-- cost budget): {"message", "eventId", "at"} as JSON text, cleared when the
-- filter changes.
ALTER TABLE endpoints ADD COLUMN filter_error TEXT;
