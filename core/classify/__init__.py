"""Classify: images in, top-k out, through the weights' own preprocessing.

The `Classifier` protocol every model answers to, batched prediction, the comparison tables of
several models over the same images, and Grad-CAM heat maps of where a model looked.
"""
