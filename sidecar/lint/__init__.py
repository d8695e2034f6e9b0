"""``opa-sidecar lint``: find proxy settings that let a request through when
authorization fails or is skipped, in Envoy, Istio and Envoy Gateway configs.

``linter.lint_paths`` is the entry point; ``cli`` wires it to the command line;
``rules`` lists every check. Kept free of imports so the command line stays
fast for the other subcommands.
"""
