"""The corpus on disk: the row schema, the output location (local or any pyarrow filesystem) and the shard writer
with its manifest and exactly-once resume."""
