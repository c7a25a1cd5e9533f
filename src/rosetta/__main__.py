"""``python -m rosetta`` runs the command-line interface."""

from rosetta.cli import main

if __name__ == "__main__":
    main()
