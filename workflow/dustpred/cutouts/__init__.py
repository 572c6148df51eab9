"""Rules ``cutout_shard`` and ``gather_cutouts`` (``cutouts.smk``): the stack cut into
HDF5 shards of gnomonic cutouts.

- ``sampling``    sky splits, cutout centres and rotations
- ``projection``  gnomonic cutouts identical to healpy's geometry
- ``shards``      the HDF5 shard format: writer and reader (``ShardSet``)
- ``extract``     the shard jobs: settings, slots, ``write_shards``, ``write_index``
"""
