-- Voltex platform schema, version 7 (SQLite): the day-ahead cycle's bid.
-- migrations/postgres/0007_dayahead_planned.sql is the same statement for the other
-- backend; the two files differ only in this header.
--
-- The day-ahead cycle bids its plan into the call auction at the fleet's marginal
-- value of energy; committed_w is what the auction awarded. planned_w is the net
-- position the plan wanted (and bid), W, positive = sell; NULL on rows written before
-- the cycle bid (then the plan was taken as cleared and equals committed_w).
ALTER TABLE dayahead_periods ADD COLUMN planned_w BIGINT;
