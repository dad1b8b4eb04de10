"""``python -m iterflow``: the same as the ``iterflow`` command."""

from iterflow.cli.main import main

if __name__ == "__main__":
    main()
