"""Datasets: the images a person brings, read safely and counted.

Zips read from memory (class folders become labels; zip slip, bombs and links refused), labelled
sets for fine-tuning (uploads per class, zips, folders; checked, split by class), and the image
sources Features and the command line read (uploads, files, folders, zips), and the check set: the
example photos and their variations that every export, int8 variant and bf16 choice is measured on.
"""
