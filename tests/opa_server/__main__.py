"""`python -m tests.opa_server`: see README.md in this directory."""

from .cli import main

raise SystemExit(main())
