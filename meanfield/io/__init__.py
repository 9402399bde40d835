"""Files: HDF5 run files (``storage`` writes, ``reader`` reads) and atomic file creation."""
