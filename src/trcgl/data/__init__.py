"""Data layer: readers → manifest, class vocabularies, splits, image I/O, torch datasets."""
