"""`python -m vidsparse ...` (and `torchrun --nproc-per-node N -m vidsparse generate ... --cp N`): the CLI."""

from .app.cli import main

raise SystemExit(main())
