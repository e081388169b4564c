"""Inside: what a model is and what it sees, from the model built on the meta device.

Its anatomy (stages, shapes, parameters, GFLOPS, skips, receptive fields), its graph as DOT, the
activations each stage computes for a photo, and ViT's attention rollout. Never imports finetune.
"""
