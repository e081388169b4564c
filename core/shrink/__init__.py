"""Shrink a model for a device: structured channel pruning through torch-pruning's dependency graph (residual
additions, depthwise groups and concatenations kept consistent), measured against the unpruned model.
Recovery training, int8 that keeps its answers and the phone formats (.ort, .pte) build on this wing next.
"""
