"""Scale-out engines: embedding on a Ray cluster (:mod:`.ray_embed`, :mod:`.ray_job`) and the
filesystems it reads and writes through (:mod:`.storage`). Needs the ``imgfeat[ray]`` extra."""
