"""A tiny PyTorch model for the PyTorch example jobs: two linear layers, fixed starting weights.

``SimpleNet(in_features, hidden)`` is ``Linear(in_features, hidden) -> ReLU -> Linear(hidden, 1)``.
Its weights do not start random: every value of its k-th parameter (in ``state_dict`` order:
``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``) starts at k (1, 2, 3, 4), so the
server's model (PTFileModelPersistor builds it from ``model: {path: pt_net.SimpleNet, args: ...}``)
and every final model are known in advance. With the default ``in_features=2, hidden=2`` the
model has 9 values whose mean is 2.
"""

import torch
from torch import nn


class SimpleNet(nn.Module):
    """``Linear(in_features, hidden) -> ReLU -> Linear(hidden, 1)``; parameter k (from 1) starts as all k."""

    def __init__(self, in_features: int = 2, hidden: int = 2):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        with torch.no_grad():
            for k, param in enumerate(self.parameters(), start=1):
                param.fill_(float(k))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
