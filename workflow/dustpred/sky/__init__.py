"""Rules ``simulate_sky`` (``sky.smk``), ``preprocess`` and ``preprocess_oracle``
(``preprocess.smk``): HEALPix maps in, the pixel-major stack out.

- ``synthetic``   the synthetic sky with known truth (rule ``simulate_sky``)
- ``harmonic``    Butterworth low-pass in ell and Nside changes in one harmonic step
- ``preprocess``  channel selection, filtering, masking -> the stack (rules ``preprocess*``)
- ``stack``       the stack's files: reader (``load_preprocessed``) and atomic writers
- ``gather``      cutout images gathered from the stack by pixel index (``cutouts.store:
  indices``; called by the shard reader)
"""
