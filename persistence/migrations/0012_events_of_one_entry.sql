-- reserve.lua appends one stream entry per call: an entry of kind orders_created holds every
-- order the call accepted, and the persister writes one event (and its movements) per order.
-- stream_index numbers the events of one entry (0 for an entry of one event, as every entry
-- before this migration), so each keeps its own key and replaying the entry changes nothing.
ALTER TABLE events ADD COLUMN stream_index integer NOT NULL DEFAULT 0;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD PRIMARY KEY (partition, stream_ms, stream_seq, stream_index);
ALTER TABLE stock_movements ADD COLUMN stream_index integer NOT NULL DEFAULT 0;
ALTER TABLE stock_movements DROP CONSTRAINT stock_movements_pkey;
ALTER TABLE stock_movements ADD PRIMARY KEY (partition, stream_ms, stream_seq, stream_index, position);
