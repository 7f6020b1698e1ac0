"""What the kernel benchmarks share: the --cpu / --threads / --iters flags and the CPU-or-GPU dispatch."""
import torch


def add_common_args(p, iters):
    p.add_argument("--cpu", action="store_true", help="time the torch reference on the CPU instead")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=iters)


def dispatch(args, cpu, gpu):
    """The GPU tables need CUDA; --cpu times the torch reference (the rollout engine's CPU path)."""
    if args.cpu:
        cpu(args)
    elif torch.cuda.is_available():
        gpu(args)
    else:
        print("needs CUDA (pass --cpu to time the torch reference on the CPU)")
