"""``torch.func``-style calls (``argnums``, ``has_aux``, keyword arguments, pytree arguments and
outputs) as functions of flat tensor leaves, for the engines that take positional tensors."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils._pytree import keystr, tree_flatten, tree_flatten_with_path, tree_map, tree_unflatten

from .._nesting import Nesting, argnums_of, nesting_of, single_of
from .tensor import Tracked, untrack

_F = torch._C._functorch


def plain(a: Any) -> Any:
    """``a`` as a plain detached tensor: unwrapped from torch.func transforms and tracking."""
    if not isinstance(a, torch.Tensor):
        return a
    while _F.is_functorch_wrapped_tensor(a):
        if _F.is_batchedtensor(a):
            raise TypeError("has_aux: the auxiliary output depends on the batched seeds; it must "
                            "depend on the arguments only")
        a = _F.get_unwrapped(a)
    with torch._C._DisableFuncTorch():   # else, inside a transform, detach() wraps the result again
        if isinstance(a, Tracked):
            a = untrack(a)
        return a.detach()


def _leaf_name(path) -> str:
    """``args[1]['x']`` / ``kwargs['n']`` for a path into ``(args, kwargs)``."""
    s = keystr(path)
    return ("args" if s.startswith("[0]") else "kwargs") + s[3:]


def _describe(leaf: Any) -> str:
    if isinstance(leaf, torch.Tensor):
        return f"shape {tuple(leaf.shape)}, {leaf.dtype}, on {leaf.device}"
    return type(leaf).__name__


class Signature:
    """A call ``f(*args, **kwargs)`` as ``call(*leaves)``: the leaves of ``(args, kwargs)`` are
    positional, those of the arguments ``argnums`` that are floating tensors are differentiated
    (``diff_pos``), and ``call`` returns the output's tensor leaves as a tuple (``scalar``: the
    output itself). With ``has_aux``, ``f`` returns ``(output, aux)``; each call keeps the aux it
    saw, detached, in ``aux``."""

    def __init__(self, f: Callable, args: Sequence[Any], kwargs: Dict[str, Any],
                 argnums: Union[None, int, Sequence[int]], has_aux: bool, where: str, scalar: bool = False):
        self.f, self.has_aux, self.where, self.scalar = f, has_aux, where, scalar
        self.kwargs = bool(kwargs)
        nums = argnums_of(argnums, len(args))
        pairs, self.in_spec = tree_flatten_with_path(self._tree(args, kwargs))
        self.leaves = [leaf for _, leaf in pairs]
        self.names = [_leaf_name(p) for p, _ in pairs]
        offsets = [0]
        for a in args:
            offsets.append(offsets[-1] + len(tree_flatten(a)[0]))
        diff: List[int] = []
        self.groups: list = []
        for i in range(len(args)) if nums is None else nums:
            sub, spec = tree_flatten(args[i])
            idx: List[Optional[int]] = []
            for k, leaf in enumerate(sub):
                if isinstance(leaf, torch.Tensor) and leaf.is_complex():
                    raise TypeError(f"{where}: {self.names[offsets[i] + k]}: complex tensors are not supported; "
                                    "split real and imaginary parts")
                if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                    idx.append(len(diff))
                    diff.append(offsets[i] + k)
                else:
                    idx.append(None)
            if nums is not None and all(j is None for j in idx):
                raise TypeError(f"{where}: argnums selects argument {i}, which holds no floating-point tensor "
                                f"(got {type(args[i]).__name__})")
            if any(j is not None for j in idx):
                self.groups.append((spec, idx))
        if not diff:
            raise TypeError(f"{where}: no floating-point tensor among the arguments to differentiate")
        self.diff_pos = diff
        self.single = single_of(argnums)
        self.legacy_in = nums is None and not any(isinstance(a, (list, tuple, dict)) for a in args)
        self.out_spec: Any = None
        self.aux: Any = None

    @staticmethod
    def _tree(args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[tuple, dict]:
        # keyword order does not matter to f, so it must not to the structure check
        return tuple(args), {k: kwargs[k] for k in sorted(kwargs)}

    # -- calling f ---------------------------------------------------------------------

    def call(self, *leaves: Any) -> Any:
        """``f`` at the leaves: the output's tensor leaves as a tuple (``scalar``: the output)."""
        args, kwargs = tree_unflatten(list(leaves), self.in_spec)
        out = self.f(*args, **kwargs)
        if self.has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"{self.where}: with has_aux=True, f must return a pair (output, aux)")
            out, aux = out
            self.aux = tree_map(plain, aux)
        if self.scalar:
            return out
        outs, spec = tree_flatten(out)
        if self.out_spec is None:
            self.out_spec = spec
        elif spec != self.out_spec:
            raise ValueError(f"{self.where}: f returned another output structure than at build time")
        return tuple(outs)

    def outputs(self) -> Any:
        """``f`` at the build point (on copies, without autograd): its output pytree."""
        copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in self.leaves]
        args, kwargs = tree_unflatten(copies, self.in_spec)
        with torch.no_grad():
            out = self.f(*args, **kwargs)
        if self.has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"{self.where}: with has_aux=True, f must return a pair (output, aux)")
            out = out[0]
        return out

    def flatten(self, args: Sequence[Any], kwargs: Dict[str, Any]) -> List[Any]:
        """The leaves of a later call, checked against the build-time structure, shapes, dtypes, devices."""
        leaves, spec = tree_flatten(self._tree(args, kwargs))
        if spec != self.in_spec:
            def show(ls, sp):
                return repr(tree_unflatten(["*"] * len(ls), sp))
            raise ValueError(f"{self.where}: the arguments (args, kwargs) are structured as {show(leaves, spec)}; "
                             f"the plan was built for {show(self.leaves, self.in_spec)}")
        for name, new, old in zip(self.names, leaves, self.leaves):
            if isinstance(old, torch.Tensor) != isinstance(new, torch.Tensor) or (
                    isinstance(old, torch.Tensor)
                    and (new.shape != old.shape or new.dtype != old.dtype or new.device != old.device)):
                raise ValueError(f"{self.where}: {name}: the plan was built for {_describe(old)}; got "
                                 f"{_describe(new)}. Build a new plan for new shapes/dtypes/devices.")
        return leaves

    # -- nesting results ---------------------------------------------------------------

    def nesting(self, out: Any) -> Nesting:
        """How a Jacobian of ``f``'s output ``out`` is nested (as ``jacobian_sparsity`` nests it)."""
        return nesting_of(out, self.legacy_in, self.groups, self.single, len(self.diff_pos))

    def hessian_nesting(self) -> Nesting:
        """How a Hessian is nested: like ``torch.autograd.functional.hessian`` for plain tensor
        arguments, else like ``torch.func.hessian`` (``jacfwd(jacrev(f))``): the gradient's
        structure, each leaf holding the inputs' structure."""
        n = len(self.diff_pos)
        grad = Nesting(False, False, None, self.groups, self.single, n).inputs(list(range(n)))
        return nesting_of(grad, self.legacy_in, self.groups, self.single, n)

    def value(self, outs: Sequence[torch.Tensor]) -> Any:
        """The output pytree from its tensor leaves."""
        return tree_unflatten([o.detach() for o in outs], self.out_spec)


def flat_call(sig: Optional["Signature"], args: Sequence[Any], kwargs: dict) -> Sequence[Any]:
    """The positional arguments of a plan's flat ``f`` for a call ``plan(*args, **kwargs)``
    (``sig`` None: the plan was built with plain positional arguments)."""
    if sig is not None:
        return sig.flatten(args, kwargs)
    if kwargs:
        raise TypeError(f"this plan was built without keyword arguments for f; got {sorted(kwargs)}")
    return args
