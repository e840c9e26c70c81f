"""The imaging floor: reading image files and bytes into pixels, strictly and with limits.

It sits between :mod:`imgfeat_cli.common` and :mod:`imgfeat_cli.models`: everything that looks at
image files (the embedding pipeline, dataset checks, training data, reports, the service) reads
them through here, so a hostile file is refused the same way everywhere. Imports only ``common``.
"""
