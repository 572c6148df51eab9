"""Rule ``download`` and the readers of the real (or synthetic) input files.

- ``download``      resumable, checksummed downloads of the real inputs (rule ``download``)
- ``healpix_maps``  validated reader/writer of HEALPix map tables (dust, masks, N_HI)
- ``hi_cube``       the HI cube opened once (``open_hi_cube``): HEALPix tables or CAR image
- ``hi_car``        the all-sky CAR image layout of the HI cube, interpolated to HEALPix
"""
