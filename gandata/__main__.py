"""``python -m gandata …`` is the ``gandata`` command (what a user's own ``torchrun … -m gandata train …`` runs)."""

from .cli import main

main()
