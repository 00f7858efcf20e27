"""The commands of the command line (the typer app itself is cli/main.py)."""
