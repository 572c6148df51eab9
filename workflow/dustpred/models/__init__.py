"""The predictors of the paper: integrated intensity, linear combinations, U-Net.

- :mod:`~dustpred.models.integrated`: ``T = sum_i I_i`` (no fit).
- :mod:`~dustpred.models.linear`: ``T = sum_i w_i I_i``, weights from the normal equations of
  the paper's appendix A: scale-independent and scale-dependent (one vector per ell bin),
  both fitted and evaluated.
- :mod:`~dustpred.models.unet`: the U-Net of Fig. 2 (the authors' network) and its variants.
- :mod:`~dustpred.models.inputs`: the U-Net's input normalisation (shards are read by
  :class:`dustpred.cutouts.shards.ShardSet`).
- :mod:`~dustpred.models.settings`: :class:`UNetSettings`, the typed ``unet`` config section.
- :mod:`~dustpred.models.checkpoint`: the U-Net model file (save, load).
"""
