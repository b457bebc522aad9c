-- The chain depth of the run that set each timer: the timer's run goes on
-- at that depth, so workflows that update each other through timers stop
-- at limits.workflow_chain_depth like those that do so directly.
ALTER TABLE timers ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
