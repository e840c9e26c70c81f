"""Typer front end: one thin module per command (parse options, resolve config, call the engine,
render). Engines live in :mod:`imgfeat_cli.core` and :mod:`imgfeat_cli.models`."""
