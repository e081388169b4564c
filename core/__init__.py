"""ZooScope's engine, importable and testable without Streamlit.

Wings, one folder per job (each `__init__` says what it owns): models, engines, classify, inside,
features, datasets, finetune, batch, cli. At the top stay the basics every wing shares: errors,
images (bytes -> image), preprocessing (image -> tensor), progress, and runtime (every decision
about the host: device, threads, precision, engine, memory budget).
"""
