-- How deep in a chain of workflow writes a run is: 0 for a run an API
-- write started, the writing run's depth + 1 for a run started by an event
-- a workflow step wrote. A write past limits.workflow_chain_depth fails its
-- run (two workflows that update each other stop).
ALTER TABLE workflow_runs ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;

-- The chain depth of the run that wrote each event a workflow step wrote.
CREATE TABLE workflow_write_depths (
    tenant_id   TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    chain_depth INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
