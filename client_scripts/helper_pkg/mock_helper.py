"""The mock training step of ``train_with_helper.py``, in a module of its own.

A client script's own modules are shipped with it: the generator follows the script's imports
(``from mock_helper import train``) and copies this file into the job's ``app/custom/``.
"""


def train(weights):
    """Mock one round of training: return ``weights + 1`` (same shape and dtype)."""
    return weights + 1
