"""``python -m archivista_mail``: the same as the archivista-mail command."""

from .cli import main

main()
