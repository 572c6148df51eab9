"""A HEALPix map table written with astropy, every header keyword under the test's control."""

import healpy as hp
import numpy as np
from astropy.io import fits


def write_map_column(path, values, *, name="I", unit=None, cards=None, fmt="E"):
    """Write ``values`` (npix,) or (npix, k) as column ``name`` of a RING galactic table;
    ``cards`` override or (value None) remove header keywords."""
    values = np.asarray(values, dtype=np.float32)
    npix = values.shape[0]
    column = fits.Column(name=name, format=fmt, array=values, unit=unit)
    hdu = fits.BinTableHDU.from_columns([column])
    header = {"PIXTYPE": "HEALPIX", "ORDERING": "RING", "NSIDE": hp.npix2nside(npix)}
    header["COORDSYS"] = "G"
    for key, value in {**header, **(cards or {})}.items():
        if value is None:
            hdu.header.pop(key, None)
        else:
            hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path
