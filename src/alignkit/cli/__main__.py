"""``python -m alignkit.cli``: the ``alignkit`` command."""

from . import main

raise SystemExit(main())
