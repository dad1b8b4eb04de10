"""The ``iterflow`` command line; the entry point is :func:`iterflow.cli.main.main`."""
