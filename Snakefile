# dustpred: predict the Planck thermal-dust foreground from the HI4PI velocity cube.
# Data flow: raw FITS -> preprocessed HEALPix stack -> HDF5 cutout shards -> models
# -> predictions -> r(ell) tables -> figures and report; full-sky template. See README.md.
#
# The workflow lives in workflow/Snakefile, the layout the Snakemake workflow catalog and
# snakedeploy expect; this file only lets `snakemake` run from the repository root.


include: "workflow/Snakefile"


# A default target set in an included file does not carry over to the including one.
workflow.default_target = "all"
