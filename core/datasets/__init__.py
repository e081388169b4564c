"""Datasets: the images a person brings, read safely and counted.

Zips read from memory (class folders become labels; zip slip, bombs and links refused), labelled
sets for fine-tuning (uploads per class, zips, folders; checked, split by class), and the image
sources Features and the command line read (uploads, files, folders, zips).
"""
