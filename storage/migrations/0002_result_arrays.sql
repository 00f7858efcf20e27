-- The score and logit arrays of stored results, cut from the posted JSON by the API and copied
-- in as float8[] (core/result_arrays.py): the saver copies them into main_classification as
-- they are, and the inbox row keeps only the small rest of the result. A result stored with its
-- arrays inline (the lenient path, or a row from before this table) is read from its payload.
CREATE TABLE result_arrays (
    inbox_id bigint NOT NULL REFERENCES result_inbox (id) ON DELETE CASCADE,
    det integer NOT NULL,
    cls integer NOT NULL,
    scores float8[] NOT NULL,
    logits float8[],
    -- max(scores): the classification's score.
    score float8 NOT NULL,
    PRIMARY KEY (inbox_id, det, cls)
);
-- Random floats do not compress; each array is read once.
ALTER TABLE result_arrays ALTER COLUMN scores SET STORAGE EXTERNAL;
ALTER TABLE result_arrays ALTER COLUMN logits SET STORAGE EXTERNAL;
