"""Typer front end: one thin module per command (parse options, resolve config, call the engine,
render). Engines live below: datasets, retrieval, training, on the pipeline and models."""
