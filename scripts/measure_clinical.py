"""Measure the clinical path on phantom studies: registration, brain masks, native-space Dice per combination against
the preprocessed cases, and the advice's agreement (see bundle.analysis.clinical)."""

from bundle.analysis.clinical import main

if __name__ == "__main__":
    main()
