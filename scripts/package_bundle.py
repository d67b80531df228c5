"""Pack this bundle for another site, or check a received package (see bundle.packaging)."""

from bundle.packaging import main

if __name__ == "__main__":
    main()
