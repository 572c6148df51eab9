"""The FITS format layer, below every reader and writer (no astropy).

- ``table``  low-level FITS binary tables: headers, row memory maps, streamed writes
- ``check``  byte-level checks that a file is (the start of) a complete FITS file
"""
