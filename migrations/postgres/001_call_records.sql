-- Call records shared by every gateway instance (issue 14). One JSON document per ended call;
-- the columns beside it are what GET /v1/calls?ended=true filters and orders on.
CREATE TABLE IF NOT EXISTS call_records (
  id         TEXT PRIMARY KEY,
  ended_at   TIMESTAMPTZ NOT NULL,
  front      TEXT NOT NULL,
  trunk      TEXT,
  instance   TEXT NOT NULL,
  record     JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS call_records_ended ON call_records (ended_at DESC);
CREATE INDEX IF NOT EXISTS call_records_front_ended ON call_records (front, ended_at DESC);
