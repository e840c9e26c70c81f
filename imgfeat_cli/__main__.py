"""``python -m imgfeat_cli``: the same as the ``imgfeat`` command."""
from imgfeat_cli.cli.entry import main

if __name__ == "__main__":  # spawned worker processes (inference streams) import this module
    main()
