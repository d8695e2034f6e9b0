"""Developer scripts: `python -m scripts.demo` and friends."""
