"""Rule ``train_unet`` (``models.smk``): U-Net training runs.

- ``losses``       the paper's loss
- ``distributed``  process group and rank-synchronised BatchNorm for data-parallel training
- ``resident``     the training set in (GPU) memory, its rotations/flips and epoch order
- ``loop``         the training loop of one process (epochs, CUDA graphs, best weights)
- ``job``          the rule's entry point: set-up, resume, several processes, model file
"""
