"""The embedding pipeline: inputs (walking, decoding), batching, worker threads and processes,
sinks (JSONL, NPY, Parquet, memory) and resume. Sits on :mod:`imgfeat_cli.models`; the engines
(datasets, retrieval, training) and the CLI sit on it."""
