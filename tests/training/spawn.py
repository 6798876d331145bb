"""The command line of the multi-process test scripts: ``python SCRIPT OUT WORLD MODE`` runs
``worker(rank, world, port, out, mode)`` on WORLD gloo ranks on a free local port."""

import os
import socket
import sys

import torch.multiprocessing as mp


def main(worker) -> None:
    out, world, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(out, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world, port, out, mode), nprocs=world)
