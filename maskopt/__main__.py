"""python -m maskopt: the command line."""
from .cli import app

app()
