"""Classify or embed a folder of 100,000 images, or a bucket, with the app's own code.

- `sources`: what a run reads, listed once on the driver (a folder, a glob, a file, a URI).
- `work`: the per-batch work both engines run, `BatchWorker`: (file, bytes, error) rows in, one
  output row per file out, a file that cannot be read or decoded as a row with its `error`.
- `output`: OUT, a folder of Parquet files either engine writes, reads back for `--resume`.
- `local`: the streaming loop on this machine. `ray_engine`: Ray Data on a local Ray or a cluster.
- `run`: the checks made before any image is read, then the chosen engine.

pyarrow is imported where it is used (Parquet files and filesystems); ray only by `ray_engine`.
"""
