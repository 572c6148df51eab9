"""Rules ``template`` and ``template_r_ell`` (``template.smk``): the full-sky template.

- ``tiling``      the tile grid, tile cutouts and the cross-fitting folds
- ``reassembly``  tile predictions put back on HEALPix
- ``amplitude``   least-squares scale and offset against the target
- ``fitsfile``    the template's FITS table: provenance cards, writer, reader
- ``sphere``      r_ell of the template on the sphere (rule ``template_r_ell``)
- ``build``       the whole template step of one experiment (rule ``template``)
"""
