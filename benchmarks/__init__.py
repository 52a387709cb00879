"""Benchmarks of cradle-archiver against the simulator and moto's S3 server (`make bench`).

Modules: `harness` (servers, configs, the request watch), `rss` (a child process and its peak
RSS), `naive` (the peer archiver), `download_only` (the download-only bound, measured),
`scenarios` (small, large, memory), `checkpoint_scale` (1,000,000 rows), `report` (the table).
"""
