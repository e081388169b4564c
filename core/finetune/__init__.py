"""Fine-tune: transfer learning on a person's own labelled images.

A new head on the frozen backbone's cached features (the penultimate layer's, or a stage's from the
network cut there), then optionally the last block, the last half or the whole network (depth), with
augmentation, micro-batches sized to a memory budget, AdamW and a warm-up + cosine schedule; the same
network from random weights as a baseline (scratch); time estimates, a learning-rate finder, metrics,
the "not sure" threshold and "unlike the training images" (familiarity), bundles (safetensors + JSON)
and verified ONNX exports.
"""
