"""Write a synthetic BraTS-like dataset whose correct teacher set is known (see bundle.data.synthetic)."""

from bundle.data.synthetic import main

if __name__ == "__main__":
    main()
