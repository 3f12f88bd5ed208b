"""Tests run on one thread: on 2 vCPUs, two threads under load can be far slower, and results
(e.g. resume equality) must not depend on thread scheduling."""

import torch

torch.set_num_threads(1)
