"""Write anatomical phantoms on the BraTS grid (see bundle.data.phantoms)."""

from bundle.data.phantoms import main

if __name__ == "__main__":
    main()
