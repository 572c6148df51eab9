"""dustpred: predict the thermal-dust foreground from the 21-cm HI velocity cube.

The library behind the Snakemake workflow; it never imports snakemake. Modules:

- ``atomic``      atomic output files (temporary name, renamed when complete)
- ``errors``      InputError and friends (bad files, bad config values)
- ``config``      experiment resolution (base config + per-experiment overrides)
- ``sky``         the synthetic sky with known truth
- ``download``    resumable, checksummed downloads of the real inputs
- ``io``          validated FITS readers/writers for HEALPix maps and cubes
- ``harmonic``    Butterworth low-pass in ell and Nside changes in one harmonic step
- ``preprocess``  channel selection, filtering, masking -> pixel-major stack
- ``sampling``    sky splits, cutout centres and rotations
- ``projection``  gnomonic cutouts identical to healpy's geometry
- ``shards``      HDF5 cutout shards
- ``metrics``     flat-sky r(ell), r50, r150
- ``losses``      the paper's loss
- ``models``      integrated, linear and U-Net predictors
- ``distributed`` process group and rank-synchronised BatchNorm for data-parallel training
- ``resident``    the training set in (GPU) memory, its rotations/flips and epoch order
- ``training``    U-Net training (resumable, DDP)
- ``evaluation``  tables of r(ell), r50/r150 and wins
- ``plots``       the paper's figures
"""

__version__ = "0.1.0"
