"""Features: a pre-trained backbone as an eye on a person's own images.

The backbone without its head (a private view over the shared model, run by ONNX Runtime where its
export is verified), embeddings of a set of images, neighbours, near-duplicates, 2-D maps,
clusters, k-NN scores, and the embeddings as files; what transfers: every stage's pooled features in one
forward pass (stages), cross-validated linear probes per stage (probes), and the network cut at a stage (cut).
Never imports finetune: fine-tuning builds on
this wing, not the other way round.
"""
