"""The ground floor: errors and exit codes, configuration, safe file writing, locks, progress,
the machine (cores, devices) and the download cache. Imports nothing else of imgfeat, nor typer
or rich, so every layer above can use it."""
