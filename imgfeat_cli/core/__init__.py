"""Core engines. Nothing under this package imports typer or rich: engines are usable as a library
and from any front end; they return typed results and report progress through callbacks."""
