"""Three simulated sites with different missing sequences: each alone, pooled, federated (see bundle.analysis.federated)."""

from bundle.analysis.federated import main

if __name__ == "__main__":
    main()
