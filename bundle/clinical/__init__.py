"""The clinical path: a DICOM study with whichever sequences were acquired, to label maps in its own space.

Needs the ``clinical`` extra (``pip install .[clinical]``: SimpleITK, pydicom, deepbet). So far: hospital-like phantom
studies written as DICOM series (:mod:`bundle.clinical.studies`), the study's series found, named by editable
rules and read into volumes (:mod:`bundle.clinical.series`), each sequence registered rigidly to the reference
(:mod:`bundle.clinical.registration`), and the reference's brain extracted (:mod:`bundle.clinical.brain`).
"""
