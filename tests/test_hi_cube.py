"""dustpred.inputs.hi_cube: the HI cube in both layouts (HEALPix tables, CAR image) through
open_hi_cube; one test per bad input."""

import gzip

import healpy as hp
import numpy as np
import pytest
from astropy.io import fits

from dustpred.errors import InputError
from dustpred.fits import table as fits_table
from dustpred.inputs import healpix_maps, hi_cube
from dustpred.inputs.hi_cube import open_hi_cube

NSIDE = 8
NPIX = 12 * NSIDE**2
DV = 1.28821496
VELOCITIES = np.arange(-10, 6) * DV  # 16 channels, -12.9 .. 6.4 km/s


@pytest.fixture
def cube():
    """(npix, nchan) RING cube whose value encodes pixel and channel."""
    pix = np.arange(NPIX, dtype=np.float32)[:, None]
    chan = np.arange(VELOCITIES.size, dtype=np.float32)[None, :]
    return pix + chan / 100.0


def write_cube(path, cube, nested=False, **kwargs):
    data = cube[hp.nest2ring(NSIDE, np.arange(NPIX))] if nested else cube
    hi_cube.write_hi_cube(path, NSIDE, VELOCITIES, [data], nested=nested, **kwargs)
    return path


def write_cube_part(path, cube, first, last, velocities=VELOCITIES):
    """Pixels ``first..last`` (RING) of ``cube`` as one file of a split cube."""
    fits_table.write_table_stream(
        path,
        [("TB", "E", VELOCITIES.size, "K")],
        last - first + 1,
        [{"TB": cube[first : last + 1]}],
        healpix_maps.healpix_header(NSIDE, nested=False, firstpix=first, lastpix=last)
        + hi_cube.hi_axis_cards(velocities),
    )
    return path


# --- the HEALPix table layout ------------------------------------------------------


def test_open_knows_layout_nside_and_channels(tmp_path, cube):
    opened = open_hi_cube(write_cube(tmp_path / "hi.fits", cube))
    assert (opened.layout, opened.nside, opened.nchan, opened.npix) == ("healpix", NSIDE, 16, NPIX)
    image = open_hi_cube(car_cube(tmp_path / "car.fits"))
    assert (image.layout, image.nside, image.nchan) == ("image", 16, 6)


def test_velocities_of_an_opened_cube_are_read_only(tmp_path, cube):
    opened = open_hi_cube(write_cube(tmp_path / "hi.fits", cube))
    with pytest.raises(ValueError, match="read-only"):
        opened.velocities[0] = 0.0


def test_velocity_axis_matches_header(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    header = fits.getheader(path, 1)
    expected = (header["CRVAL1"] + (np.arange(16) + 1 - header["CRPIX1"]) * header["CDELT1"]) / 1e3
    np.testing.assert_allclose(open_hi_cube(path).velocities, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(open_hi_cube(path).velocities, VELOCITIES, rtol=0, atol=1e-9)


def test_cube_with_another_column_name_is_read_through_that_column(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube, column="TEMP")
    np.testing.assert_allclose(open_hi_cube(path, column="TEMP").velocities, VELOCITIES, atol=1e-9)
    assert open_hi_cube(path, column="TEMP").nside == NSIDE


def test_velocity_axis_in_kms_units(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with fits.open(path, mode="update") as hdul:
        h = hdul[1].header
        h["CUNIT1"], h["CRVAL1"], h["CDELT1"] = "km/s", h["CRVAL1"] / 1e3, h["CDELT1"] / 1e3
    np.testing.assert_allclose(open_hi_cube(path).velocities, VELOCITIES, atol=1e-9)


def test_channel_selection_is_inclusive_and_sorted():
    v = np.arange(-93, 63) * DV
    idx = hi_cube.channels_in_range(v, -64.5, 17.0)
    assert idx.size == 64  # the paper's 64 maps
    assert v[idx].min() >= -64.5 and v[idx].max() <= 17.0
    assert v[idx[0] - 1] < -64.5 and v[idx[-1] + 1] > 17.0
    # a decreasing axis gives the same channels, in increasing velocity
    idx_rev = hi_cube.channels_in_range(v[::-1], -64.5, 17.0)
    np.testing.assert_array_equal(v[::-1][idx_rev], v[idx])


def test_read_channels_ring(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    out = open_hi_cube(path).read_channels([3, 0, 15])
    assert out.dtype == np.float32 and out.shape == (NPIX, 3)
    np.testing.assert_array_equal(out, cube[:, [3, 0, 15]])


def test_read_channels_nested_is_reordered_to_ring(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube, nested=True)
    out = open_hi_cube(path).read_channels([2, 5])
    np.testing.assert_array_equal(out, cube[:, [2, 5]])


def test_read_channels_in_small_blocks(tmp_path, cube, monkeypatch):
    monkeypatch.setattr(hi_cube, "_BLOCK_BYTES", 7 * 64)  # 7 rows per block
    path = write_cube(tmp_path / "hi.fits", cube, nested=True)
    np.testing.assert_array_equal(open_hi_cube(path).read_channels([1, 9]), cube[:, [1, 9]])


def test_cube_split_over_files_in_a_directory(tmp_path, cube):
    directory = tmp_path / "hi"
    directory.mkdir()
    for first, last in ((0, 299), (300, 599), (600, NPIX - 1)):
        write_cube_part(directory / f"part{first:04d}.fits", cube, first, last)
    np.testing.assert_array_equal(open_hi_cube(directory).read_channels([4, 7]), cube[:, [4, 7]])
    np.testing.assert_allclose(open_hi_cube(directory).velocities, VELOCITIES, atol=1e-9)


def test_read_spectra_of_pixels(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube, nested=True)
    np.testing.assert_array_equal(
        open_hi_cube(path).read_spectra([0, 17, NPIX - 1]), cube[[0, 17, NPIX - 1]]
    )


def test_hi_in_mk_is_converted_to_k(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["TUNIT1"] = "mK"
    np.testing.assert_allclose(
        open_hi_cube(path).read_channels([1]), cube[:, [1]] * 1e-3, rtol=1e-6
    )


# --- one test per bad input --------------------------------------------------------


def test_error_truncated_file(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"hi.fits.*truncated.*found \d+ bytes, expected"):
        open_hi_cube(path)


def test_error_cube_rows_not_npix(tmp_path, cube):
    path = tmp_path / "hi.fits"
    fits_table.write_table_stream(
        path,
        [("TB", "E", 16, "K")],
        NPIX - 1,
        [{"TB": cube[:-1]}],
        healpix_maps.healpix_header(NSIDE, nested=False) + hi_cube.hi_axis_cards(VELOCITIES),
    )
    with pytest.raises(InputError, match=rf"table has {NPIX - 1} rows; expected one per pixel"):
        open_hi_cube(path)


def test_error_nan_in_cube(tmp_path, cube):
    cube = cube.copy()
    cube[5, 3] = np.nan
    path = write_cube(tmp_path / "hi.fits", cube)
    with pytest.raises(InputError, match="hi.fits.*1 non-finite"):
        open_hi_cube(path).read_channels([3])


def test_error_missing_velocity_keywords(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with fits.open(path, mode="update") as hdul:
        del hdul[1].header["CDELT1"]
    with pytest.raises(InputError, match=r"velocity axis keywords \['CDELT1'\] missing"):
        open_hi_cube(path)


def test_error_non_velocity_spectral_axis(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["CTYPE1"] = "FREQ"
    with pytest.raises(InputError, match="CTYPE1 is 'FREQ'; expected a velocity axis"):
        open_hi_cube(path)


def test_error_channel_range_outside_cube():
    with pytest.raises(InputError, match=r"\[-64.5, 17.0\] km/s requested; expected a range"):
        hi_cube.channels_in_range(VELOCITIES, -64.5, 17.0, source="hi.fits")


def test_error_channel_range_of_an_opened_cube_names_its_file(tmp_path, cube):
    opened = open_hi_cube(write_cube(tmp_path / "hi.fits", cube))
    with pytest.raises(InputError, match=r"hi.fits: velocity range \[-64.5, 17.0\] km/s"):
        opened.channels_in_range(-64.5, 17.0)


def test_error_channel_index_outside_cube(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with pytest.raises(InputError, match=r"expected indices in 0..15"):
        open_hi_cube(path).read_channels([3, 16])


def test_error_split_cube_with_gap(tmp_path, cube):
    directory = tmp_path / "hi"
    directory.mkdir()
    for first, last in ((0, 299), (400, NPIX - 1)):
        write_cube_part(directory / f"p{first}.fits", cube, first, last)
    with pytest.raises(InputError, match="starts at pixel 400; expected pixel 300"):
        open_hi_cube(directory)


def test_error_split_cube_with_different_velocity_axes(tmp_path, cube):
    directory = tmp_path / "hi"
    directory.mkdir()
    for first, last, shift in ((0, 299, 0.0), (300, NPIX - 1, 0.5)):
        write_cube_part(directory / f"p{first}.fits", cube, first, last, VELOCITIES + shift)
    with pytest.raises(InputError, match="velocity axis differs"):
        open_hi_cube(directory)


# --- HI cube as an all-sky plate-carree image (HI4PI's ALLSKY/GAL/CAR.fits layout) -


def car_cube(path, *, nchan=6, ctype1="GLON-CAR", ctype2="GLAT-CAR", nx=72, step=5.0):
    """A (nchan, 36, nx) galactic CAR cube of 5 deg pixels: T = c + sin b + 0.3 cos b cos l."""
    ny = 36
    lon = (np.arange(nx) + 1 - (nx / 2 + 0.5)) * -step
    lat = (np.arange(ny) + 1 - 18.5) * step
    b, lon_rad = np.radians(np.meshgrid(lat, lon, indexing="ij"))
    plane = np.sin(b) + 0.3 * np.cos(b) * np.cos(lon_rad)
    data = np.stack([plane + c for c in range(nchan)]).astype(np.float32)
    hdu = fits.PrimaryHDU(data)
    for key, value in {
        "CTYPE1": ctype1,
        "CRVAL1": 0.0,
        "CDELT1": -step,
        "CRPIX1": nx / 2 + 0.5,
        "CUNIT1": "deg",
        "CTYPE2": ctype2,
        "CRVAL2": 0.0,
        "CDELT2": step,
        "CRPIX2": 18.5,
        "CUNIT2": "deg",
        "CTYPE3": "VRAD",
        "CRVAL3": -2000.0,
        "CDELT3": 1288.21496,
        "CRPIX3": 1.0,
        "CUNIT3": "m/s",
        "BUNIT": "K",
    }.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def expected_car(nside, channel):
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside**2))
    b = np.pi / 2 - theta
    return channel + np.sin(b) + 0.3 * np.cos(b) * np.cos(phi), np.degrees(b)


def test_car_cube_velocity_axis_and_nside(tmp_path):
    path = car_cube(tmp_path / "car.fits")
    np.testing.assert_allclose(open_hi_cube(path).velocities, -2.0 + np.arange(6) * 1.28821496)
    assert open_hi_cube(path).nside == 16  # the coarsest Nside with pixels <= 5 deg (3.7 deg)


def test_car_cube_is_interpolated_to_healpix(tmp_path):
    path = car_cube(tmp_path / "car.fits")
    out = open_hi_cube(path).read_channels([4, 1])
    assert out.shape == (12 * 16**2, 2) and out.dtype == np.float32
    for j, chan in enumerate((4, 1)):
        truth, b = expected_car(16, chan)
        # bilinear interpolation on 5 deg pixels: error <= (5 deg)^2 x curvature / 8 ~ 2e-3;
        # beyond the last pixel row (|b| > 87.5 deg) the edge row is used
        np.testing.assert_allclose(out[np.abs(b) < 87.5, j], truth[np.abs(b) < 87.5], atol=3e-3)
        np.testing.assert_allclose(out[:, j], truth, atol=1e-2)


def test_car_cube_spectra_of_pixels(tmp_path):
    path = car_cube(tmp_path / "car.fits")
    spectra = open_hi_cube(path).read_spectra([0, 1000])
    channels = open_hi_cube(path).read_channels(np.arange(6))
    np.testing.assert_array_equal(spectra, channels[[0, 1000]])


def test_error_equatorial_car_cube(tmp_path):
    path = car_cube(tmp_path / "car.fits", ctype1="RA---CAR", ctype2="DEC--CAR")
    with pytest.raises(
        InputError, match="image axes are 'RA---CAR', 'DEC--CAR'; expected galactic"
    ):
        open_hi_cube(path)


def test_error_partial_sky_car_cube(tmp_path):
    path = car_cube(tmp_path / "car.fits", nx=36)
    with pytest.raises(InputError, match="longitude axis spans 180.000 deg; expected the full 360"):
        open_hi_cube(path)


def test_error_truncated_car_cube(tmp_path):
    path = car_cube(tmp_path / "car.fits")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match="car.fits: file is truncated"):
        open_hi_cube(path)


# --- scaled integer storage, explicit-index and compressed files --------------------


def test_scaled_integer_cube_column_is_read_in_kelvin(tmp_path, cube):
    raw = np.round(cube * 10).astype(np.int16)  # TB = 0.01 * stored + 0.5 (a 16I column)
    fits_table.write_table_stream(
        tmp_path / "hi.fits",
        [("TB", "I", VELOCITIES.size, "K")],
        NPIX,
        [{"TB": raw}],
        healpix_maps.healpix_header(NSIDE, nested=False)
        + hi_cube.hi_axis_cards(VELOCITIES)
        + [("TSCAL1", 0.01, ""), ("TZERO1", 0.5, "")],
    )
    opened = open_hi_cube(tmp_path / "hi.fits")
    expected = raw * 0.01 + 0.5
    np.testing.assert_allclose(opened.read_channels([3, 0]), expected[:, [3, 0]], atol=1e-5)
    np.testing.assert_allclose(opened.read_spectra([0, 700]), expected[[0, 700]], atol=1e-5)


def scaled_car_cube(path, *, blank_at=None):
    """``car_cube`` stored as int16 with BSCALE/BZERO/BLANK; returns the physical values."""
    data = fits.getdata(car_cube(path))
    header = fits.getheader(path)
    raw = np.round((data - 2.5) / 1e-3).astype(np.int16)
    if blank_at is not None:
        raw[blank_at] = -32768
    hdu = fits.PrimaryHDU(raw, header=header)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 1e-3, 2.5, -32768
    hdu.writeto(path, overwrite=True)
    return raw * np.float32(1e-3) + np.float32(2.5)


def test_car_cube_with_bscale_bzero_is_read_in_kelvin(tmp_path):
    physical = scaled_car_cube(tmp_path / "int.fits")
    fits.PrimaryHDU(physical, header=fits.getheader(car_cube(tmp_path / "f.fits"))).writeto(
        tmp_path / "float.fits"
    )
    scaled = open_hi_cube(tmp_path / "int.fits").read_channels([4, 1])
    plain = open_hi_cube(tmp_path / "float.fits").read_channels([4, 1])
    np.testing.assert_allclose(scaled, plain, rtol=0, atol=1e-5)


def test_error_car_cube_blank_values_refused_like_unseen(tmp_path):
    scaled_car_cube(tmp_path / "car.fits", blank_at=(1, 10, 20))
    with pytest.raises(InputError, match="car.fits: channel 1 has 1 UNSEEN pixels"):
        open_hi_cube(tmp_path / "car.fits").read_channels([1])


def test_error_car_cube_bscale_not_a_number(tmp_path):
    path = car_cube(tmp_path / "car.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["BSCALE"] = "one"
    with pytest.raises(InputError, match="car.fits: BSCALE is 'one'; expected a number"):
        open_hi_cube(path)


def test_error_explicit_index_cube_refused(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    with fits.open(path, mode="update") as hdul:
        hdul[1].header["INDXSCHM"] = "EXPLICIT"
    with pytest.raises(InputError, match="hi.fits: INDXSCHM is 'EXPLICIT'.*expected an implicit"):
        open_hi_cube(path)


@pytest.mark.parametrize("layout", ["healpix", "image"])
def test_error_gzip_compressed_cube(tmp_path, cube, layout):
    path = (
        write_cube(tmp_path / "hi.fits", cube)
        if layout == "healpix"
        else car_cube(tmp_path / "hi.fits")
    )
    (tmp_path / "hi.fits.gz").write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(InputError, match=r"hi.fits.gz: file is gzip-compressed.*gunzip"):
        open_hi_cube(tmp_path / "hi.fits.gz")


def test_error_directory_of_gzip_files(tmp_path, cube):
    directory = tmp_path / "hi"
    directory.mkdir()
    data = write_cube(tmp_path / "hi.fits", cube).read_bytes()
    (directory / "part0.fits.gz").write_bytes(gzip.compress(data))
    with pytest.raises(InputError, match=r"hi: directory holds 1 gzip-compressed file\(s\)"):
        open_hi_cube(directory)


def test_error_cube_file_with_only_a_primary_hdu(tmp_path):
    fits.PrimaryHDU().writeto(tmp_path / "hi.fits")
    with pytest.raises(InputError, match=r"hi.fits: no BINTABLE extension found; found 1 HDU"):
        open_hi_cube(tmp_path / "hi.fits")


def test_error_cube_file_cut_inside_its_header(tmp_path, cube):
    path = write_cube(tmp_path / "hi.fits", cube)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(InputError, match="hi.fits: not a readable FITS file: it ends inside the"):
        open_hi_cube(path)


def _with_stokes_axis(path, n_stokes):
    """Rewrite the CAR cube at ``path`` with a 4th (STOKES) axis of length ``n_stokes``."""
    with fits.open(path) as hdul:
        data, header = hdul[0].data, hdul[0].header.copy()
    hdu = fits.PrimaryHDU(np.stack([data] * n_stokes))
    for key in ("CTYPE", "CRVAL", "CDELT", "CRPIX", "CUNIT"):
        for i in (1, 2, 3):
            if f"{key}{i}" in header:
                hdu.header[f"{key}{i}"] = header[f"{key}{i}"]
    hdu.header.update(BUNIT="K", CTYPE4="STOKES", CRVAL4=1.0, CDELT4=1.0, CRPIX4=1.0)
    hdu.writeto(path, overwrite=True)
    return path


def test_car_cube_with_a_stokes_axis_of_length_one_reads_as_the_3d_cube(tmp_path):
    plain = open_hi_cube(car_cube(tmp_path / "car.fits")).read_channels([4, 1])
    four_d = _with_stokes_axis(car_cube(tmp_path / "car4.fits"), 1)
    np.testing.assert_array_equal(open_hi_cube(four_d).read_channels([4, 1]), plain)


def test_car_cube_with_two_stokes_planes_names_its_shape_not_a_missing_table(tmp_path):
    path = _with_stokes_axis(car_cube(tmp_path / "car.fits"), 2)
    with pytest.raises(
        InputError,
        match=r"car.fits: HDU 0 is a 4-D image of shape \(NAXIS1..\) \[72, 36, 6, 2\], axes "
        r"\['GLON-CAR', 'GLAT-CAR', 'VRAD', 'STOKES'\]; expected a 3-D",
    ):
        open_hi_cube(path)
