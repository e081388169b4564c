"""Fine-tune: transfer learning on a person's own labelled images.

A new head on the frozen backbone's cached features, then optionally the last block, the last half
or the whole network (depth), with augmentation, micro-batches sized to a memory budget, AdamW and
a warm-up + cosine schedule; time estimates, a learning-rate finder, metrics, the "not sure"
threshold, bundles (safetensors + JSON) and verified ONNX exports.
"""
