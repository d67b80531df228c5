"""Train with and without CKD (or any other change) on one split and compare per case (see bundle.analysis.ablation)."""

from bundle.analysis.ablation import main

if __name__ == "__main__":
    main()
