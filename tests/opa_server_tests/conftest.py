# The fixtures plugin, until tests/conftest.py declares pytest_plugins = ["tests.fixtures.opa"]
# (a non-root conftest may not declare plugins itself). Delete this file then.
from tests.fixtures.opa import (  # noqa: F401
    _fault_opa_session,
    fault_opa,
    fault_opa_unix,
    opa_server,
    opa_server_factory,
)
