"""Jobs: the one line that heavy work from every session goes through.

Every visitor is a thread in one process on a small host, so training, embedding a set, stage
maps, exports, quantization and measuring many models are admitted by the CPUs and the memory this
process may use (its cgroup's limit, or ZOOSCOPE_MEMORY_LIMIT_MB), first come first served, each
job's memory estimated before it starts; a person sees their place in line and can cancel, and a
closed session frees its place. Light work never waits here, and trainings give way to short work:
they pause between micro-batches while it runs, at a lower OS priority all along.
"""
