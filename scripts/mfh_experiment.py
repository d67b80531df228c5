"""Sweep the synthetic shared-signal fraction and plot the KD gain (see bundle.analysis.mfh)."""

from bundle.analysis.mfh import main

if __name__ == "__main__":
    main()
