"""Stage 3, the plugins: discovery (entry points, ``--plugins`` folders), the hash of a plugin's source, the
default hyperparameter check, the conformance checks behind ``segarena.platform.conformance``, and loading a
plugin from stored weights. The contract itself (``plugin.py``, ``dataset.py``) sits one floor down, at the
top of ``platform/``, where labs import it."""
