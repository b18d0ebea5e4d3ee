-- PostgreSQL translation of sqlite/0003_storage_state.sql (same version number).
-- What the storage driver needs to continue an upload (an S3 multipart
-- upload's id and parts), as text it alone reads. NULL on the filesystem.
ALTER TABLE uploads ADD COLUMN storage_state TEXT;
