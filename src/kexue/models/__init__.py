"""Networks, one file (or folder) per paper (built on :mod:`kexue.nn` and :mod:`kexue.ops`)."""
