# Imported here, before any test starts a server thread: CPython 3.11.7 can
# raise a spurious SystemError when a module is first compiled while another
# thread runs (gh-106905), and hypothesis' plugin imports lazily at the end.
import hypothesis  # noqa: F401

pytest_plugins = ["tests.fixtures.opa"]
