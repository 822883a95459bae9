"""Shared helpers of the spherical merges (slerp, nuslerp, multislerp, karcher) and of the
merges that work over column chunks (ram, sce, nearswap ...); registers nothing.

mergekit 0.1.5 hands a merge kernel its inputs in one dtype D, the promotion of the loaded
tensors' dtypes (`merge_methods/dtype.py`: `promoted_dtype`, `align_dtype`); `aligned` does
the same here when the inputs of a tensor differ in dtype, so each kernel sees what
mergekit's sees.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def one_thread():
    """torch's intra-op threads set to 1 for the block, then restored.

    For loops of many small elementwise operations over chunks (a few MB each): every op
    is a parallel region, and on a loaded machine each region can wait milliseconds for
    its second thread to be scheduled (measured: 64 Ki-column chunks of ram took 69 s on
    two threads and 0.5 s on one, with another process busy on both cores). The values
    do not depend on the thread count for elementwise operations and reductions over the
    model axis (each column is summed alone, in model order); whole-tensor reductions
    (norms, dot products, means over a tensor), whose split depends on the thread count,
    must stay outside the block. One thing does depend on the split: the bit pattern of a
    NaN in bfloat16/float16 maths (torch's vectorised loops and their scalar tails encode
    it differently), so where NaNs arise there mergekit's own NaN bits differ between one
    thread and two; where the NaNs are, and every other value, do not.
    """
    import torch

    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


MIN_CHUNK = 1 << 14  # entries: below, a chunk costs more in dispatch than in arithmetic
ALIGN = 1 << 12  # every chunk but the last starts and ends at a multiple of this


def spans(size: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of every chunk of range(size): `chunk` entries, or fewer (down to
    MIN_CHUNK) so that a smaller tensor still makes eight chunks to share between threads.
    The first chunk is the widest (size its buffers by it).

    Chunk widths are multiples of ALIGN (`chunk` must be one): torch's sum over the model
    axis of a (k, w) tensor adds the columns of full vector blocks in another order than
    the few columns of the tail (for k >= 4 or so the floats differ), so a column must be
    in a tail in a chunk exactly when it is in the whole tensor's: that holds when every
    chunk but the last is a multiple of the blocks (measured: widths of 1000 and 37500
    columns change bits, 64, 96, 1024 and 32768 do not)."""
    wanted = -(-size // 8)
    chunk = min(chunk, max(MIN_CHUNK, -(-wanted // ALIGN) * ALIGN))
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def widest(chunks: list[tuple[int, int]]) -> int:
    """The width of the first (widest) of `spans`, 0 for none."""
    return chunks[0][1] - chunks[0][0] if chunks else 0


def per_thread(factory):
    """A `scratch` for `each` that makes one state per thread and keeps it: for loops
    that call `each` many times (buffers of a few hundred kB come from mmap, each
    allocation paying its page faults)."""
    import threading

    states = {}

    def state():
        key = threading.get_ident()
        if key not in states:
            states[key] = factory()
        return states[key]
    return state


SERIAL_ITEMS = 4  # `each` runs fewer items than this on the calling thread alone
_POOL: list = []  # the helper threads of `each`, started once per process


def each(items, work, scratch=None, minimum: int = SERIAL_ITEMS) -> None:
    """work(item, state) for every item, spread over as many threads as torch has
    intra-op threads (the caller and helpers from a pool kept for the process), each torch
    op inside on one thread (`one_thread`): the chunks of an elementwise pass run side by
    side with no parallel region per op, so a loaded machine costs no waits and an idle
    one still uses every core. Items are taken in turn from one queue (a slow thread takes
    fewer); fewer than `minimum` run on the caller alone. `scratch()` makes each
    thread's own state (its buffers), None without it. Items must write disjoint outputs:
    the floats are then those of a loop over them, in any order. torch's kernels release
    the GIL while they run. Not reentrant: `work` must not call `each`."""
    import threading

    import torch

    items = list(items)
    workers = min(len(items), torch.get_num_threads())
    if workers <= 1 or len(items) < minimum:
        with one_thread():
            state = scratch() if scratch else None
            for item in items:
                work(item, state)
        return
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads() - 1),
                                        thread_name_prefix="studbook-merge"))
    queue = iter(items)
    lock = threading.Lock()
    errors = []

    def run():
        try:
            state = scratch() if scratch else None
            while not errors:
                with lock:
                    item = next(queue, queue)
                if item is queue:
                    return
                work(item, state)
        except BaseException as exc:  # raised in the caller below
            errors.append(exc)

    with one_thread():
        helpers = [_POOL[0].submit(run) for _ in range(workers - 1)]
        run()  # the calling thread is one of the workers
        for helper in helpers:
            helper.result()
    if errors:
        raise errors[0]


def promoted(tensors) -> object:
    """D: the promotion of the dtypes of `tensors` (None entries skipped), in input order."""
    import torch

    dtype = None
    for tensor in tensors:
        if tensor is not None:
            dtype = tensor.dtype if dtype is None else torch.promote_types(dtype, tensor.dtype)
    return dtype


def aligned(base, tensors: list) -> tuple:
    """(base, tensors, D) with every input in D; `tensors` is changed in place (no copy when
    the dtypes already agree)."""
    dtype = promoted([base, *tensors])
    if base is not None and base.dtype != dtype:
        base = base.to(dtype)
    for index, tensor in enumerate(tensors):
        if tensor is not None and tensor.dtype != dtype:
            tensors[index] = tensor.to(dtype)
    return base, tensors, dtype


def working(dtype):
    """mergekit's upcast for norms and interpolation coefficients: float64 inputs stay
    float64, every other floating dtype is computed in float32."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
