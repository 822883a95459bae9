"""The shared core of mergekit's generalised task arithmetic (task_arithmetic, ties, dare_*,
breadcrumbs*, della*).

Not a method itself (its name starts with `_`, and it registers nothing). Every method of
the family is `combine()` with a sparsifier and a consensus rule, exactly as mergekit
0.1.5's `GeneralizedTaskArithmeticMerge.merge_group` and `mergekit/sparsify.py`
(docs/design/mergekit_parity.md, section 2.1): per non-base model, in config order, the
task vector `model - base` (in the merge dtype D) is sparsified (with an optional L1
rescale), multiplied by its weight rounded to D, signs are elected ("sum" consensus) or
not, and the result is optionally divided by the weights and multiplied by `lambda`.

The sparsifiers are written here by hand because no library has mergekit's: PEFT's
`peft.utils.merge_utils` differs in every one of them (its `magnitude_based_pruning` is a
top-k that breaks ties in another order; its `random_pruning` draws the mask in the
tensor's dtype with `bernoulli_(density)` and rescales by 1/density, the paper's DARE,
where mergekit draws `torch.bernoulli` of a probability tensor in float32 (bfloat16 for
bfloat16 inputs) and rescales to the task vector's original L1 norm; PEFT has no
magnitude_outliers nor della_magprune). Their arithmetic is mergekit's operation for
operation, so a mergekit recipe gives mergekit's tensors, under its `random_seed` for the
random ones: they draw from torch's global generator (seeded once per merge by the
caller), one `bernoulli` per non-base model with density < 1, in model order, per tensor;
density >= 1 draws nothing.

What differs from a literal transcription is only what large tensors cost:

- Magnitude pruning keeps what mergekit's descending argsort keeps (and magnitude_outliers
  what its ascending sort keeps). A task vector `child - base` lies on the base's
  floating-point grid, so magnitudes often tie exactly, and which tied entries at a cut
  survive is decided by the sort's own (unstable) order: PEFT's top-k breaks those ties
  differently (on 134 M-parameter checkpoints it gave other TIES tensors,
  bench/merge_vs_mergekit.py). A selection (`kthvalue`, linear time) finds each cut; only
  when ties straddle a cut does the sort run, so the result is always the sort's and the
  sort is rare.
- DELLA's ranks are the inverse of one argsort permutation, written with a scatter rather
  than a second argsort (a permutation has no ties, so both give the same ranks).
- The method consumes its `tensors` list (entries become None) so each input is freed
  once its task vector exists, and pruning, masking, rescaling and the bernoulli draw (into
  its own probability tensor) work in place on that task vector.
- Sign election and the weighted sum run over column chunks of the stacked task vectors,
  so their temporaries (signs, masks, products) are a few MB instead of several copies of
  the largest tensor. Every output element sees the same operations in the same order.
  `int8_mask` is accepted and changes nothing: mergekit's mask is a bool either way.
  The sign rule is written out (three lines) rather than taken from PEFT's
  `calculate_majority_sign_mask`: importing peft costs ~160 MB of resident memory, more
  than the merge's own working set allows, and peft is no longer imported at all.
"""

from __future__ import annotations

CHUNK_ELEMENTS = 1 << 20  # columns per chunk in the sign election and sum
RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescale below this L1 norm

# every GTA method's parameters (mergekit's GeneralizedTaskArithmeticMerge.spec); the
# defaults of normalize and rescale are per method
PER_MODEL = {"weight": None, "density": 1.0}


def shared_defaults(normalize: bool, rescale: bool) -> dict:
    return {"int8_mask": False, "normalize": normalize, "rescale": rescale, "lambda": 1.0}


def _work_dtype(tensor):
    """mergekit's dtype for bernoulli draws: the input's on bfloat16 (or off the CPU), else
    float32 (CPU bernoulli has no float16; float64 is drawn in float32 too)."""
    import torch

    if tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16:
        return tensor.dtype
    return torch.float32


def _rescale_l1(masked, before):
    """mergekit's `rescaled_masked_tensor` with norm l1, in place on `masked`: scale to the
    L1 norm `before` of the unmasked tensor, unless either norm is below 1e-7."""
    after = masked.abs().sum()
    if before < RESCALE_EPS or after < RESCALE_EPS:
        return masked
    return masked.mul_(before / after)


def _cut_mask(magnitudes, low_rank: int, count: int):
    """Where the entries of ascending ranks low_rank .. low_rank+count-1 of the flat float32
    `magnitudes` are, or None when exact ties straddle either end (then only the sort knows)."""
    import torch

    total = magnitudes.numel()
    if count <= 0:
        return torch.zeros(total, dtype=torch.bool)
    mask = None
    if low_rank > 0:
        mask = magnitudes >= torch.kthvalue(magnitudes, low_rank + 1).values
    if low_rank + count < total:
        below = magnitudes <= torch.kthvalue(magnitudes, low_rank + count).values
        mask = below if mask is None else mask.logical_and_(below)
    if mask is None:
        return torch.ones(total, dtype=torch.bool)
    return mask if int(mask.sum()) == count else None


def magnitude_prune(delta, density: float, inplace: bool = False, rescale: bool = False):
    """mergekit's `magnitude`: keep the max(1, int(density x n)) largest magnitudes (exact
    ties at the cut as its descending argsort orders them); `rescale`: to the L1 norm."""
    import torch

    count = delta.numel()
    if density >= 1:
        return delta
    if density <= 0 or count == 0:
        return torch.zeros_like(delta)
    keep = max(1, int(density * count))
    magnitudes = delta.abs().reshape(-1)
    if magnitudes.dtype != torch.float32:
        magnitudes = magnitudes.float()  # mergekit sorts float32 magnitudes on the CPU
    mask = _cut_mask(magnitudes, count - keep, keep)
    if mask is None:  # ties straddle the cut: argsort's order decides which stay
        order = torch.argsort(magnitudes, descending=True)[:keep]
        mask = torch.zeros(count, dtype=torch.bool)
        mask[order] = True
    del magnitudes
    return _apply(delta, mask.view_as(delta), inplace, rescale)


def magnitude_outliers(delta, density: float, gamma: float = 0.01, inplace: bool = False,
                       rescale: bool = False):
    """mergekit's `magnitude_outliers` (Model Breadcrumbs): drop the int(gamma x n) largest
    magnitudes, then the smallest, keeping int(density x n) entries (fewer outliers are
    dropped when both do not fit); exact ties as its ascending `torch.sort` orders them."""
    import torch

    if density >= 1:
        return delta
    count = delta.numel()
    target = int(density * count)
    top = int(gamma * count)
    bottom = max(0, count - target - top)
    magnitudes = delta.abs().reshape(-1)
    if magnitudes.dtype != torch.float32:
        magnitudes = magnitudes.float()
    mask = _cut_mask(magnitudes, bottom, min(target, count - bottom))
    if mask is None:  # ties straddle a cut: the sort's order decides which stay
        order = torch.sort(magnitudes, descending=False).indices
        mask = torch.zeros(count, dtype=torch.bool)
        mask[order[bottom:bottom + target]] = True
    del magnitudes
    return _apply(delta, mask.view_as(delta), inplace, rescale)


def _apply(delta, mask, inplace: bool, rescale: bool):
    """`delta * mask` (x*1 and x*0, as mergekit's float mask gives), then the L1 rescale."""
    before = delta.abs().sum() if rescale else None
    masked = delta.mul_(mask) if inplace else delta * mask
    return _rescale_l1(masked, before) if rescale else masked


def bernoulli_prune(delta, density: float, inplace: bool = False, rescale: bool = False):
    """mergekit's `bernoulli` (DARE): keep each entry with probability `density` (rounded to
    the working dtype), drawn by one `torch.bernoulli` over the tensor; `rescale`: to the
    task vector's L1 norm (mergekit), not by 1/density (the paper, PEFT)."""
    import torch

    if density >= 1:
        return delta  # no draw
    dtype, work = delta.dtype, _work_dtype(delta)
    tensor = delta.to(work) if work != dtype else delta
    inplace = inplace or tensor is not delta
    # not PEFT's random_pruning (bernoulli_(density) in the tensor's dtype, then / density):
    # other draws and another rescale than mergekit's
    mask = torch.full_like(tensor, density, dtype=work)
    mask.bernoulli_(mask)  # = torch.bernoulli(probabilities): same kernel, same draws
    return _apply(tensor, mask, inplace, rescale).to(dtype)


def check_della(density: float, epsilon: float) -> None:
    if 0 < density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise ValueError(
            f"della: density {density:g} ± epsilon {epsilon:g} = ({density - epsilon:g}, "
            f"{density + epsilon:g}) must stay inside (0, 1), the range of the keep "
            f"probabilities: lower epsilon, or move density away from 0 and 1")


def della_magprune(delta, density: float, epsilon: float = 0.15, inplace: bool = False,
                   rescale: bool = False):
    """mergekit's `della_magprune` (DELLA's MagPrune): per row, keep each entry with a
    probability from density - epsilon (smallest magnitude) to density + epsilon (largest),
    linear in its rank, drawn by one `torch.bernoulli`; `rescale`: to the L1 norm."""
    import torch

    if density >= 1:
        return delta  # no draw
    if density <= 0:
        return torch.zeros_like(delta)
    check_della(density, epsilon)
    shape, dtype, work = delta.shape, delta.dtype, _work_dtype(delta)
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    if rows.shape[1] == 1 and rows.numel():  # mergekit: 0/0 probabilities, torch.bernoulli fails
        raise ValueError(f"della ranks magnitudes within rows (dim 1), and a tensor of shape "
                         f"{tuple(shape)} has rows of one entry: there is nothing to rank")
    order = torch.argsort(rows.abs(), dim=1, descending=False)
    # ranks = order.argsort(dim=1).to(work) + 1: the inverse permutation of each row
    positions = torch.arange(order.shape[1]).to(work)
    positions = positions.view(1, -1, *[1] * (order.dim() - 2)).expand(order.shape)
    probs = torch.empty(order.shape, dtype=work).scatter_(1, order, positions)
    del order, positions
    probs.add_(1)
    # mergekit's ranks.min/max(dim=1).values: the same values; amin/amax skip the indices,
    # which on CPU cost ~4 ms for a (400, 32) tensor (600 times the reduction itself)
    low = probs.amin(dim=1, keepdim=True)
    high = probs.amax(dim=1, keepdim=True)
    # rank_norm = ((ranks - low) / (high - low)).clamp(0, 1); probs = (d - e) + rank_norm * 2 * e
    probs.sub_(low).div_(high - low).clamp_(0, 1)
    del low, high
    probs.mul_(2).mul_(epsilon).add_(density - epsilon)
    probs.bernoulli_(probs)  # = torch.bernoulli(probs): the mask, in the working dtype
    tensor = rows.to(work) if work != dtype else rows
    inplace = inplace or tensor is not rows
    return _apply(tensor, probs, inplace, rescale).to(dtype).reshape(shape)


SPARSIFIERS = {"magnitude": magnitude_prune, "random": bernoulli_prune,
               "magnitude_outliers": magnitude_outliers, "della_magprune": della_magprune}


def sparsify(delta, method: str, params: dict, rescale: bool, inplace: bool = False):
    """One task vector through mergekit's sparsifier `method`, with the model's parameters."""
    density = params.get("density", 1.0)
    if method == "magnitude_outliers":
        return magnitude_outliers(delta, density, params["gamma"], inplace, rescale)
    if method == "della_magprune":
        return della_magprune(delta, density, params["epsilon"], inplace, rescale)
    return SPARSIFIERS[method](delta, density, inplace, rescale)


RANDOM = ("random", "della_magprune")  # sparsifiers that draw from torch's generator


PARALLEL_PRUNE_ELEMENTS = 1 << 22  # larger tensors are pruned one model at a time


def _each(work, items, parallel: bool = True) -> None:
    """work(item) for every item, on as many threads as torch uses (its kernels release
    the GIL), or serially when not `parallel`; an exception is raised here."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    threads = min(len(items), torch.get_num_threads()) if parallel else 1
    if threads <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def combine(base, tensors, per_model, shared, prune: str | None, elect_sign: bool):
    """mergekit's `GeneralizedTaskArithmeticMerge.merge_group` with sparsifier `prune`
    (a key of SPARSIFIERS, or None) and consensus "sum" when `elect_sign`."""
    import torch

    if not tensors:
        return base
    if prune == "della_magprune":  # refuse before any draw, naming the parameters
        for params in per_model:
            check_della(params.get("density", 1.0), params["epsilon"])
    # the k task vectors as the rows of one tensor (mergekit's `deltas`), each written in
    # place: the chunks below are views of it, not stacked copies
    flat_base = base.reshape(-1)
    deltas = torch.empty((len(per_model), flat_base.numel()), dtype=base.dtype)

    def prune_row(index: int) -> None:
        row = deltas[index]
        pruned = sparsify(row.view(base.shape), prune, per_model[index], bool(shared["rescale"]), inplace=True)
        if pruned.data_ptr() != row.data_ptr():
            row.copy_(pruned.reshape(-1))

    for index in range(len(per_model)):
        # consume the caller's list: each input is freed as soon as its task vector exists
        tensor, tensors[index] = tensors[index], None
        torch.sub(tensor.reshape(-1), flat_base, out=deltas[index])
        del tensor
        if prune in RANDOM:  # draws in model order from the one generator: serial
            prune_row(index)
    if prune and prune not in RANDOM:
        # magnitude selections (a sort when ties straddle the cut, as mergekit's) are serial
        # kernels: one model per core gives the same rows sooner. Each holds about three
        # copies of its row (magnitudes, the selection's copy, the mask): on the largest
        # tensors (embeddings, head) side by side they would lift the peak over one model
        # plus output (measured: 1.64x at 134 M parameters), so those go one at a time
        _each(prune_row, range(len(per_model)), parallel=flat_base.numel() <= PARALLEL_PRUNE_ELEMENTS)
    dtype = deltas.dtype
    weights = torch.tensor([p["weight"] for p in per_model], dtype=dtype).unsqueeze(-1)
    merged = torch.empty_like(base)
    flat_merged = merged.view(-1)
    for start in range(0, flat_base.numel(), CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        chunk = deltas[:, start:stop]
        chunk.mul_(weights)
        if elect_sign:  # mergekit's get_mask, method "sum" (TIES): the heavier sign wins
            majority = (chunk.sum(dim=0) >= 0).to(dtype) * 2 - 1
            agree = chunk.sign() == majority
            mixed = chunk.mul_(agree).sum(dim=0)  # x * True, x * False: as mergekit's product
            divisor = (weights * agree).sum(dim=0)
            divisor.masked_fill_(divisor == 0, 1)
        else:
            mixed = chunk.sum(dim=0)
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if shared["normalize"]:
            mixed /= divisor
        if shared["lambda"] != 1:
            mixed *= shared["lambda"]
        flat_merged[start:stop] = (flat_base[start:stop] + mixed).to(base.dtype)
    return merged
