"""Datasets: the sample set, folders, CUB, COCO and named datasets, preprocessing, and reading images."""
