"""Pipeline steps: one module each, each with `run(args)` returning a one-line summary."""
