"""dustpred: predict the thermal-dust foreground from the 21-cm HI velocity cube.

The library behind the Snakemake workflow; it never imports snakemake. Modules:

- ``atomic``      atomic output files (temporary name, renamed when complete)
- ``errors``      InputError and friends (bad files, bad config values)
- ``config``      experiment resolution (base config + overrides), the lambda sweep; no h5py/pandas
- ``sky``         the synthetic sky with known truth
- ``download``    resumable, checksummed downloads of the real inputs
- ``fits_table``  low-level FITS binary tables (headers, row memory maps, streamed writes)
- ``healpix_maps`` validated reader/writer of HEALPix map tables (dust, masks)
- ``hi_cube``     the HI cube opened once (``open_hi_cube``): HEALPix tables or CAR image
- ``hi_car``      the all-sky CAR image layout of the HI cube, interpolated to HEALPix
- ``harmonic``    Butterworth low-pass in ell and Nside changes in one harmonic step
- ``preprocess``  channel selection, filtering, masking -> pixel-major stack
- ``sampling``    sky splits, cutout centres and rotations
- ``projection``  gnomonic cutouts identical to healpy's geometry
- ``shards``      HDF5 cutout shards
- ``metrics``     flat-sky r(ell), r50, r150 (paper's form and an offset-robust one)
- ``resampling``  block bootstrap/jackknife errors over sky regions, win fractions
- ``losses``      the paper's loss
- ``models``      integrated, linear and U-Net predictors
- ``distributed`` process group and rank-synchronised BatchNorm for data-parallel training
- ``resident``    the training set in (GPU) memory, its rotations/flips and epoch order
- ``trainer``     the U-Net training loop (one process: epochs, CUDA graphs, best weights)
- ``training``    U-Net training runs: set-up, resume, several processes, model file
- ``evaluation``  tables of r(ell), r50/r150 and wins
- ``plots``       the paper's figures
- ``fullsky``     full-sky template: tiles, cross-fitting folds, reassembly on HEALPix
- ``fullsky_output``   template amplitude fit and FITS table
- ``fullsky_validate`` r_ell of the template on the sphere
"""

__version__ = "0.1.0"
