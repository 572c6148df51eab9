"""dustpred: predict the thermal-dust foreground from the 21-cm HI velocity cube.

The library behind the Snakemake workflow; it never imports snakemake. One subpackage per
stage of the DAG, in the order of ``workflow/rules/``; a module imports only from its own
subpackage, from the core and from the stages before it (``tests/test_layers.py``):

- core (this folder): ``errors`` (InputError, ConfigError), ``atomic`` (atomic output
  files), ``logutil`` (job logs), ``devices`` (GPU jobs: no silent CPU run),
  ``ordered_pool`` (bounded, ordered thread pool),
  ``benchmarks`` (Snakemake benchmark tables), ``config`` (experiment resolution and the
  checks across keys), ``metrics`` (flat-sky r(ell), r50, r150: shared by the losses, the
  linear model and the evaluation)
- ``fits``        the FITS format layer: binary tables and byte-level checks
- ``inputs``      ``download.smk``: downloads and the readers of the input maps and HI cube
- ``sky``         ``sky.smk``, ``preprocess.smk``: synthetic sky, harmonic filtering, the stack
- ``cutouts``     ``cutouts.smk``: sampling, projection, HDF5 shards
- ``polarisation`` the polarisation stages up to the models: Q/U maps and sky, spin-2
  cutouts, E/B maps and r^EE/r^BB, the HI-orientation baselines (issue 28)
- ``models``      integrated, linear and U-Net predictors, the model file
- ``training``    ``models.smk`` (``train_unet``): losses, resident data, loop, job
- ``evaluation``  ``predict.smk``, ``evaluate.smk``: predictions, tables, errors, summaries
- ``qu_evaluation`` ``predict_qu``, ``evaluate_qu``: the polarisation models' E/B maps, tables
- ``template``    ``template.smk``: tiles, reassembly, amplitude, FITS file, sphere r_ell
- ``figures``     every figure rule: one style, the paper's and the comparison figures
- ``realisations`` ``make realisations``: the whole DAG on several skies, spread across them
"""

__version__ = "0.1.0"
