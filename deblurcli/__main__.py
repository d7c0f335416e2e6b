"""``python -m deblurcli`` runs the same CLI as the ``deblur`` console script."""

from deblurcli.cli import main

if __name__ == "__main__":
    main()
