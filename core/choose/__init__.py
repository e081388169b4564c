"""Choose a model for a device: every catalogue model measured on this machine (random weights, nothing
downloaded), a latency model for the ones not measured yet, budgets, the Pareto frontier, a recommendation.

- `table`: the measurements' schema, one row per model and runtime, read and written as Parquet.
- `machine`: what a row records about where it was measured (CPU, cores, threads, versions).
- `measure`: one model measured in one runtime: latency, throughput, memory, sizes.
- `bench_models`: the whole run over many models, resumable from the cache.
- `predict`: the latency model fitted on measured rows, with its leave-out error.
- `frontier`: budgets, the Pareto frontier, and the recommendation with its reasons.
- `shortlist`: what to measure first, and the tables chosen from (this machine's, another device's).
"""
