"""alignkit: align language models with human and AI feedback.

Subpackages are imported lazily by the user: ``import alignkit`` costs nothing beyond this file.
"""

__version__ = "0.1.0"
